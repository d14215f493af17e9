"""The history before the first sync, from the events log (`history_backfill`): in SQL.

Each event's `data.object` is its record's state at the event's `timestamp`. A backfill run
stages those states (`extract.snapshots`) beside the object's tables, one row per state and
table, with the record's id replaced by the event's id, and a list of the snapshots (`Snapshots`:
event id, record id, time; a deletion's snapshot has no rows). In the publishing transaction,
after the sync's own versions are written, each history table gains the versions the events show
before its record's first version:

1. for every key (a record, a line item), its state at each of its record's snapshots, or none
   (deleted, or not in that snapshot's list), in time order; of several snapshots in one second,
   the last;
2. runs of equal states (by `record_hash`) are versions, from the run's first snapshot to the
   next run's, marked `is_deleted` when the next run is no state;
3. the last run before the record's first version ends where that version begins; when it holds
   the same state, that version starts earlier instead (it has been so since the run began). A
   record the warehouse never saw (deleted before the first sync) ends its last run at its
   deletion event, its customer's or invoice's, else at the sync, `is_deleted`.

Only snapshots before a key's first version are read, so a second backfill adds nothing.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations.history import (
    RECORD_HASH,
    VALID_FROM,
    HistoryDialect,
    HistorySpec,
    deletion_joins,
    first_after,
    history_table,
    insert_versions,
    keys_equal,
    record_hash,
    timestamp_literal,
)
from invoiced_assets.extract.snapshots import AT, RECORD, SEQ


def staged_states(table: str) -> str:
    """The staged name of a table's states from the events."""
    return f"{table}__event_states"


def staged_snapshots(obj: str) -> str:
    return f"{obj}__event_snapshots"


def staged_deletions(obj: str) -> str:
    return f"{obj}__event_deletions"


@dataclass(frozen=True)
class Snapshots:
    """An object's states from the events, staged: the snapshots' list, and each table's
    states with their staged column types."""

    snapshots: str
    tables: Mapping[str, Mapping[str, FieldType]]  # table -> its states' staged columns
    record_type: FieldType
    # Every deletion event's time, of every object (a contact ends with its customer), staged:
    # (d_object, d_record, d_at).
    deletions: str

    @property
    def staged_names(self) -> list[str]:
        return [self.snapshots, self.deletions, *(staged_states(t) for t in self.tables)]


def backfill_statements(
    dialect: HistoryDialect,
    spec: HistorySpec,
    columns: Mapping[str, FieldType],
    snapshots: Snapshots,
    now: int,
) -> tuple[str, str]:
    """(start first versions earlier, insert the versions before them), in that order.

    The first moves the cut-off the second reads (a key's first version), so the second adds
    only the runs before the ones the first merged."""
    c = dialect.column
    h = dialect.published(spec.name)
    keys = spec.key
    versions = _versions(dialect, spec, columns, snapshots, now)
    merged = (
        f"UPDATE {h} AS t SET {c(VALID_FROM)} = m.v_from FROM ({versions}) m"
        f" WHERE m.v_merges AND {keys_equal(dialect, keys, 't', 'm')}"
        f" AND t.{c(VALID_FROM)} = m.v_cut AND t.{c(RECORD_HASH)} = m.v_hash"
    )
    inserted = (
        f"{insert_versions(dialect, spec, columns)} SELECT {', '.join(f'v.{c(n)}' for n in columns)}, v.v_from, v.v_to, FALSE,"
        f" v.v_deleted, v.v_hash FROM ({versions}) v WHERE NOT v.v_merges"
    )
    return merged, inserted


def _versions(
    dialect: HistoryDialect,
    spec: HistorySpec,
    columns: Mapping[str, FieldType],
    snapshots: Snapshots,
    now: int,
) -> str:
    """The runs of equal states before each key's first version, with where each ends."""
    c = dialect.column
    h = dialect.published(spec.name)
    keys = spec.key
    key_list = ", ".join(c(k) for k in keys)
    by_key = f"PARTITION BY {', '.join(f'g.{c(k)}' for k in keys)} ORDER BY g.s_at"
    link = spec.parent[2] if spec.parent is not None else keys[0]
    record_key = spec.parent[1] if spec.parent is not None else keys[0]
    record_history = h if spec.parent is None else dialect.published(history_table(spec.parent[0]))
    staged_types = snapshots.tables[spec.table]
    # The snapshots, the last of each record's second.
    snap = (
        f"SELECT y.{c(SEQ)} AS s_seq, y.{c(RECORD)} AS s_record, y.{c(AT)} AS s_at FROM"
        f" (SELECT x.*, ROW_NUMBER() OVER (PARTITION BY x.{c(RECORD)}, x.{c(AT)}"
        f" ORDER BY x.{c(SEQ)} DESC) AS s_rn FROM {dialect.staged(snapshots.snapshots)} x) y"
        f" WHERE y.s_rn = 1"
    )
    selected = []
    for name, field_type in columns.items():
        if name == link:
            value = dialect.convert("s.s_record", snapshots.record_type, field_type)
        elif name in staged_types:
            value = dialect.convert(f"b.{c(name)}", staged_types[name], field_type)
        else:  # not in any snapshot: unknown then
            value = f"CAST(NULL AS {dialect.sql_type(field_type)})"
        selected.append(f"{value} AS {c(name)}")
    states = (
        f"SELECT s.s_record, s.s_at, {', '.join(selected)}"
        f" FROM {dialect.staged(staged_states(spec.table))} b JOIN ({snap}) s"
        f" ON s.s_seq = b.{c(link)}"
    )
    hashed = f"SELECT r.*, {record_hash(dialect, columns, 'r')} AS r_hash FROM ({states}) r"
    known = f"SELECT DISTINCT r.s_record, {', '.join(f'r.{c(k)}' for k in keys)} FROM ({states}) r"
    record_cut = (
        f"SELECT {c(record_key)} AS r_record, MIN({c(VALID_FROM)}) AS r_from FROM {record_history}"
        f" GROUP BY {c(record_key)}"
    )
    key_cut = f"SELECT {key_list}, MIN({c(VALID_FROM)}) AS k_from FROM {h} GROUP BY {key_list}"
    cut = (
        "CASE WHEN rc.r_from IS NULL THEN kc.k_from WHEN kc.k_from IS NULL THEN rc.r_from"
        " WHEN kc.k_from < rc.r_from THEN kc.k_from ELSE rc.r_from END"
    )
    grid = (
        f"SELECT {', '.join(f'k.{c(k)}' for k in keys)}, k.s_record AS g_record, s.s_at,"
        f" hr.r_hash AS g_hash, {cut} AS g_cut"
        f" FROM ({known}) k JOIN ({snap}) s ON s.s_record = k.s_record"
        f" LEFT JOIN ({record_cut}) rc ON rc.r_record = k.s_record"
        f" LEFT JOIN ({key_cut}) kc ON {keys_equal(dialect, keys, 'kc', 'k')}"
        f" LEFT JOIN ({hashed}) hr ON hr.s_at = s.s_at AND hr.s_record = k.s_record"
        f" AND {keys_equal(dialect, keys, 'hr', 'k')}"
        f" WHERE (rc.r_from IS NULL OR s.s_at < rc.r_from)"
        f" AND (kc.k_from IS NULL OR s.s_at < kc.k_from)"
    )
    starts = (
        f"SELECT g.*, CASE WHEN ROW_NUMBER() OVER ({by_key}) > 1"
        f" AND COALESCE(LAG(g.g_hash) OVER ({by_key}), '~') = COALESCE(g.g_hash, '~')"
        f" THEN 0 ELSE 1 END AS g_start FROM ({grid}) g"
    )
    numbered = (
        f"SELECT g.*, SUM(g.g_start) OVER ({by_key} ROWS BETWEEN UNBOUNDED PRECEDING"
        f" AND CURRENT ROW) AS g_run FROM ({starts}) g"
    )
    runs = (
        f"SELECT {', '.join(f'g.{c(k)}' for k in keys)}, g.g_run, MIN(g.g_record) AS u_record,"
        f" MIN(g.s_at) AS u_from, MAX(g.g_hash) AS u_hash, MAX(g.g_cut) AS u_cut"
        f" FROM ({numbered}) g GROUP BY {', '.join(f'g.{c(k)}' for k in keys)}, g.g_run"
    )
    by_run = f"PARTITION BY {', '.join(f'u.{c(k)}' for k in keys)} ORDER BY u.g_run"
    ends = (
        f"SELECT u.*, LEAD(u.u_from) OVER ({by_run}) AS u_next,"
        f" LEAD(u.u_hash) OVER ({by_run}) AS u_next_hash FROM ({runs}) u"
    )
    # One row per deleted record (its last deletion event: see `extract.snapshots`).
    deletions = (
        f"SELECT {c('d_object')} AS d_object, {c('d_record')} AS d_record, {c('d_at')} AS d_at"
        f" FROM {dialect.staged(snapshots.deletions)}"
    )
    joins, candidates = deletion_joins(dialect, spec, deletions, "hr")
    gone = first_after("e.u_from", candidates, timestamp_literal(dialect, now))
    first_key = c(keys[0])
    return (
        f"SELECT {', '.join(f'hr.{c(n)}' for n in columns)}, e.u_from AS v_from,"
        f" CASE WHEN e.u_next IS NOT NULL THEN e.u_next WHEN e.u_cut IS NOT NULL THEN e.u_cut"
        f" ELSE {gone} END AS v_to,"
        f" CASE WHEN e.u_next IS NOT NULL THEN e.u_next_hash IS NULL"
        f" WHEN e.u_cut IS NOT NULL THEN sc.{first_key} IS NULL ELSE TRUE END AS v_deleted,"
        f" e.u_hash AS v_hash, e.u_cut AS v_cut,"
        f" CASE WHEN e.u_next IS NULL AND sc.{c(RECORD_HASH)} = e.u_hash THEN TRUE ELSE FALSE"
        f" END AS v_merges"
        f" FROM ({ends}) e JOIN ({hashed}) hr ON hr.s_at = e.u_from"
        f" AND hr.s_record = e.u_record AND {keys_equal(dialect, keys, 'hr', 'e')}"
        f" LEFT JOIN {h} sc ON {keys_equal(dialect, keys, 'sc', 'e')}"
        f" AND sc.{c(VALID_FROM)} = e.u_cut" + "".join(joins) + " WHERE e.u_hash IS NOT NULL"
    )


def ordered_for_backfill(specs: Sequence[HistorySpec]) -> list[HistorySpec]:
    """Child tables first: a parent's backfill moves the first versions their cut-off is."""
    return sorted(specs, key=lambda spec: spec.parent is None)
