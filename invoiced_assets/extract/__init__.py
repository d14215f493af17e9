"""Reading Invoiced objects: listings and their date windows, per-customer reads, the scheduling of
several objects at once, and the events and cursors of incremental reads."""
