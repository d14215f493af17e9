"""Records to tables: the conversions (wire format, types, widening), shaping pages into tables,
batches on disk, and schema drift from one load to the next."""
