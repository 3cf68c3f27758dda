"""Data contracts: validate what a source reader read against a Great Expectations suite.

A `Suite` lists the columns a source must have and row-level `Rule`s. `check` runs the rules with
Great Expectations (ephemeral context, pandas datasource, whole-frame batch), sets aside the rows
that fail a quarantine rule (written with a `_failed_rules` column to `<quarantine_dir>/<suite>.csv`)
and raises `ContractError` when a blocking rule fails or too many rows were set aside. The error
names the suite, the file, the column, the rule, a few offending rows and the hint.

Great Expectations takes about 6 s to import, so it is imported on the first `check` that has
rules to run, never when this module is imported.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import shutil
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

RuleKind = Literal["not_null", "between", "in_set", "unique", "regex"]

# Rule kind -> the name used in messages and the run manifest (the GX expectation without "expect_column_").
RULE_NAMES: dict[str, str] = {
    "not_null": "values_not_null",
    "between": "values_between",
    "in_set": "values_in_set",
    "unique": "values_unique",
    "regex": "values_match_regex",
}
FAILED_RULES_COLUMN = "_failed_rules"
N_EXAMPLES = 5  # offending rows kept per failed rule in the result
N_EXAMPLES_IN_MESSAGE = 3
N_VALIDATION_VALUES = 20  # offending values (and row positions) kept per rule for Data Docs
_MAX_TEXT_IN_MESSAGE = 60  # characters of a text value shown in an error message


@dataclass(frozen=True)
class Rule:
    """One row-level expectation on one column.

    Nulls only fail "not_null": the other kinds skip them, as Great Expectations does. "regex" is
    searched anywhere in the value (anchor it with ^...$ to match the whole value). "unique" flags
    every copy of a duplicated value, not just the later ones. With quarantine=True a failing row is
    set aside; mostly < 1 then also stops the run when fewer than that share of non-null values pass.
    With quarantine=False the rule stops the run when fewer than `mostly` pass, and keeps the rows.
    """

    column: str
    kind: RuleKind
    min: float | None = None
    max: float | None = None
    values: tuple = ()
    pattern: str | None = None
    quarantine: bool = True
    hint: str = ""
    mostly: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in RULE_NAMES:
            raise ValueError(
                f"unknown rule kind {self.kind!r}; expected one of {sorted(RULE_NAMES)}"
            )
        if self.kind == "between":
            if self.min is None and self.max is None:
                raise ValueError(f"rule 'between' on {self.column!r} needs min or max")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(
                    f"rule 'between' on {self.column!r}: min {self.min} > max {self.max}"
                )
        if self.kind == "in_set" and not self.values:
            raise ValueError(f"rule 'in_set' on {self.column!r} needs values")
        if self.kind == "regex":
            if not self.pattern:
                raise ValueError(f"rule 'regex' on {self.column!r} needs a pattern")
            re.compile(self.pattern)
        if not 0.0 < self.mostly <= 1.0:
            raise ValueError(
                f"rule on {self.column!r}: mostly must be in (0, 1], got {self.mostly}"
            )

    @property
    def name(self) -> str:
        """Rule name as shown in messages, e.g. "values_between"."""
        return RULE_NAMES[self.kind]

    def describe(self) -> str:
        """Rule name with its parameters, e.g. "values_between(min=36, max=40)"."""
        if self.kind == "between":
            args = ", ".join(
                f"{k}={v}" for k, v in (("min", self.min), ("max", self.max)) if v is not None
            )
        elif self.kind == "in_set":
            shown = ", ".join(repr(v) for v in self.values[:6])
            args = shown + (", ..." if len(self.values) > 6 else "")
        elif self.kind == "regex":
            args = repr(self.pattern)
        else:
            args = ""
        if self.mostly < 1.0:
            args = f"{args}, mostly={self.mostly}" if args else f"mostly={self.mostly}"
        return f"{self.name}({args})" if args else self.name


@dataclass(frozen=True)
class Suite:
    """The contract of one source: required columns, row rules, and how many bad rows are tolerable."""

    name: str
    required_columns: tuple[str, ...]
    rules: tuple[Rule, ...] = ()
    max_quarantine_share: float = 0.05  # share of input rows (0..1)

    @property
    def columns(self) -> tuple[str, ...]:
        """Required columns plus the columns the rules read, in first-seen order."""
        return tuple(dict.fromkeys((*self.required_columns, *(r.column for r in self.rules))))


@dataclass
class ContractResult:
    """What a contract check found; `to_dict` goes into the run manifest.

    Each entry of `failures` describes one rule that some rows failed: rule, column, n_failed,
    examples (offending rows as dicts, up to 5) plus rows (their index labels), quarantine (whether
    the rows were set aside), passed (False when the rule itself failed, i.e. below `mostly`) and hint.
    A missing-columns failure has rule "columns_present", column None, and a `missing` list.
    """

    suite: str
    source: str
    rows_in: int
    rows_passed: int
    rows_quarantined: int
    failures: list[dict]
    quarantine_file: str | None
    seconds: float = 0.0  # wall time of the validation
    # Great Expectations' validation result as JSON (rule columns under their real names, lists
    # of offending values cut to N_VALIDATION_VALUES): what Data Docs render. Not in to_dict.
    validation: dict | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return _json_safe({f.name: getattr(self, f.name) for f in fields(self)
                           if f.name != "validation"})

    def validation_record(self) -> dict | None:
        """Suite, source and GX validation result, as `write_data_docs` reads them back."""
        if self.validation is None:
            return None
        return {"suite": self.suite, "source": self.source, "validation": self.validation}


class ContractError(Exception):
    """A source broke its data contract; str(error) says where, what and how to fix it."""

    def __init__(self, message: str, result: ContractResult | None = None) -> None:
        super().__init__(message)
        self.result = result


def check(
    df: pd.DataFrame,
    suite: Suite,
    *,
    source: str | Path,
    quarantine_dir: Path | None = None,
    show_columns: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, ContractResult]:
    """Validate df against suite with Great Expectations.

    Missing required (or rule) columns raise ContractError naming the file, the missing columns
    and the columns present. Rows failing a quarantine rule are left out of the returned frame
    (a new frame; df is not changed and the original index is kept) and written, with a
    `_failed_rules` column and their original values, to `quarantine_dir/<suite>.csv`, replacing
    the previous run's file (which is deleted when no row is set aside). A failing blocking rule,
    or a quarantined share above suite.max_quarantine_share, raises ContractError after the
    quarantine file is written. `show_columns` picks the columns of the example rows (default:
    the rule's column plus up to 4 others). Example rows are identified by index label.
    """
    if suite.rules:
        _gx()  # the one-off import is not part of the validation time
    started = time.perf_counter()
    source = str(source)
    header = f"data contract '{suite.name}' failed for {source}"
    rows_in = len(df)

    missing = [c for c in suite.columns if c not in df.columns]
    if missing:
        result = ContractResult(
            suite=suite.name,
            source=source,
            rows_in=rows_in,
            rows_passed=0,
            rows_quarantined=0,
            failures=[{"rule": "columns_present", "column": None, "missing": missing}],
            quarantine_file=None,
        )
        present = ", ".join(repr(str(c)) for c in df.columns) or "(none)"
        raise ContractError(
            f"{header}\n  missing columns: {', '.join(repr(c) for c in missing)}\n"
            f"  columns present: {present}",
            result,
        )

    outcomes, validation = _run_gx(df, suite) if suite.rules else ([], None)

    broken = [(rule, o) for rule, o in zip(suite.rules, outcomes, strict=True) if o.error]
    if broken:
        lines = [header]
        for rule, o in broken:
            lines.append(
                f"  column '{rule.column}', rule {rule.describe()} could not be evaluated "
                f"(dtype {df[rule.column].dtype}): {o.error}"
            )
            if rule.hint:
                lines.append(f"  hint: {rule.hint}")
        raise ContractError("\n".join(lines), None)

    quarantined = np.zeros(rows_in, dtype=bool)
    failed_names: dict[int, list[str]] = defaultdict(list)  # row position -> failed rules
    failures: list[tuple[Rule, dict]] = []
    blocking = False
    for rule, o in zip(suite.rules, outcomes, strict=True):
        if rule.quarantine:
            quarantined[o.positions] = True
            for p in o.positions.tolist():
                failed_names[p].append(f"{rule.column}:{rule.name}")
        if len(o.positions) == 0 and o.passed:
            continue
        first = o.positions[:N_EXAMPLES]
        failure = {
            "rule": rule.name,
            "column": rule.column,
            "n_failed": len(o.positions),
            "rows": [_json_safe(v) for v in df.index[first]],
            "examples": _example_rows(df, first, rule, suite, show_columns),
            "quarantine": rule.quarantine,
            "passed": o.passed,
            "hint": rule.hint,
        }
        failures.append((rule, failure))
        blocking |= not o.passed and (not rule.quarantine or rule.mostly < 1.0)

    n_quarantined = int(quarantined.sum())
    quarantine_file = _write_quarantine(df, quarantined, failed_names, suite.name, quarantine_dir)
    result = ContractResult(
        suite=suite.name,
        source=source,
        rows_in=rows_in,
        rows_passed=rows_in - n_quarantined,
        rows_quarantined=n_quarantined,
        failures=[f for _, f in failures],
        quarantine_file=quarantine_file,
        seconds=round(time.perf_counter() - started, 3),
        validation=validation,
    )

    share = n_quarantined / rows_in if rows_in else 0.0
    too_many = share > suite.max_quarantine_share
    if blocking or too_many:
        lines = [header]
        for rule, f in failures:
            lines.extend(_failure_lines(rule, f, rows_in))
        if too_many:
            lines.append(
                f"  {n_quarantined} of {rows_in} rows ({share:.1%}) were set aside, more than the "
                f"{suite.max_quarantine_share:.1%} the suite allows"
                + (f"; see {quarantine_file}" if quarantine_file else "")
            )
        raise ContractError("\n".join(lines), result)

    if n_quarantined:
        logger.warning(
            "data contract '%s': set aside %d of %d rows of %s (%s)",
            suite.name,
            n_quarantined,
            rows_in,
            source,
            quarantine_file or "no quarantine_dir given, rows not written",
        )
    return df.iloc[np.flatnonzero(~quarantined)], result


@dataclass(frozen=True)
class _Outcome:
    positions: np.ndarray  # row positions (0..n-1) that failed the rule
    passed: bool  # GX success, i.e. at least `mostly` of the non-null values pass
    error: str | None = None  # GX could not evaluate the rule


def _run_gx(df: pd.DataFrame, suite: Suite) -> tuple[list[_Outcome], dict]:
    """Run the suite's rules through Great Expectations: one outcome per rule, in rule order,
    and the validation result as JSON for Data Docs (see `_validation_json`)."""
    gx = _gx()
    import great_expectations.expectations as gxe

    # GX works on a view with a RangeIndex and one column per rule ("r0", "r1", ...), so that its
    # unexpected_index_list is row positions (for an unnamed index GX returns index labels, and
    # for a named index dicts of them) and a rule's dtype fixes cannot leak into another rule.
    view = pd.DataFrame(
        {f"r{i}": _prepare(df[rule.column], rule) for i, rule in enumerate(suite.rules)}
    )
    expectations = {
        "not_null": lambda c, r: gxe.ExpectColumnValuesToNotBeNull(column=c, mostly=r.mostly),
        "between": lambda c, r: gxe.ExpectColumnValuesToBeBetween(
            column=c, min_value=r.min, max_value=r.max, mostly=r.mostly
        ),
        "in_set": lambda c, r: gxe.ExpectColumnValuesToBeInSet(
            column=c, value_set=list(r.values), mostly=r.mostly
        ),
        "unique": lambda c, r: gxe.ExpectColumnValuesToBeUnique(column=c, mostly=r.mostly),
        "regex": lambda c, r: gxe.ExpectColumnValuesToMatchRegex(
            column=c, regex=r.pattern, mostly=r.mostly
        ),
    }

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = _no_progress_bars()
    batch_definition = (
        context.data_sources.add_pandas(f"{suite.name}_source")
        .add_dataframe_asset(suite.name)
        .add_batch_definition_whole_dataframe("whole_frame")
    )
    gx_suite = gx.ExpectationSuite(name=suite.name)
    for i, rule in enumerate(suite.rules):
        expectation = expectations[rule.kind](f"r{i}", rule)
        expectation.meta = {"rule_index": i}
        gx_suite.add_expectation(expectation)
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(
            name=f"{suite.name}_contract", data=batch_definition, suite=context.suites.add(gx_suite)
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        run = validation.run(
            batch_parameters={"dataframe": view}, result_format={"result_format": "COMPLETE"}
        )

    # GX does not return results in suite order.
    outcomes: dict[int, _Outcome] = {}
    for r in run.results:
        index = r.expectation_config.meta["rule_index"]
        error = _exception_message(r.exception_info)
        positions = np.asarray(r.result.get("unexpected_index_list") or [], dtype=np.int64)
        outcomes[index] = _Outcome(np.sort(positions), bool(r.success), error)
    return [outcomes[i] for i in range(len(suite.rules))], _validation_json(run, suite)


def _validation_json(run: Any, suite: Suite) -> dict:
    """The GX validation result as JSON, readable on its own: each expectation names the real
    column (GX saw "r0", "r1", ...) and carries the rule, its hint and whether failing rows are
    set aside in `meta`; lists of offending values and row positions are cut to
    N_VALIDATION_VALUES (the quarantine file has them all), the pandas query that would select
    them is dropped. Changes the results of `run`, which is thrown away afterwards."""
    for r in run.results:
        rule = suite.rules[r.expectation_config.meta["rule_index"]]
        r.expectation_config.kwargs["column"] = rule.column
        r.expectation_config.meta = {"rule_index": r.expectation_config.meta["rule_index"],
                                     "rule": rule.describe(), "quarantine": rule.quarantine,
                                     "hint": rule.hint}
        result = r.result or {}
        result.pop("unexpected_index_query", None)
        for key in ("unexpected_list", "unexpected_index_list", "partial_unexpected_list",
                    "partial_unexpected_index_list", "partial_unexpected_counts"):
            if isinstance(result.get(key), list):
                result[key] = result[key][:N_VALIDATION_VALUES]
    return _json_safe(run.to_json_dict())


def _prepare(column: pd.Series, rule: Rule) -> pd.Series:
    """The column as GX should see it for this rule, with a RangeIndex."""
    values = column.reset_index(drop=True)
    if rule.kind != "between" or pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        # GX compares int64/float64 vectorised but other numeric dtypes (Int64, float32) value by value.
        return pd.Series(values.to_numpy(dtype="float64", na_value=np.nan))
    # Text or mixed column: GX raises on strings against numeric bounds and skips nulls, so a value
    # that is not a number would either stop the check or pass unseen; make it an out-of-range number.
    numbers = pd.to_numeric(values.astype(object), errors="coerce")
    not_a_number = numbers.isna() & values.notna()
    return numbers.astype("float64").mask(
        not_a_number, math.inf if rule.max is not None else -math.inf
    )


@functools.cache
def _gx() -> Any:
    """Import great_expectations once, quietly (it warns on import and logs at INFO)."""
    gx_logger = logging.getLogger("great_expectations")
    if gx_logger.level == logging.NOTSET:
        gx_logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import great_expectations as gx
    # says "Created temporary directory ... for ephemeral docs site" at INFO on every check
    docs_logger = logging.getLogger("great_expectations.data_context.types.base")
    if docs_logger.level in (logging.NOTSET, logging.INFO):
        docs_logger.setLevel(logging.WARNING)
    return gx


def _no_progress_bars() -> Any:
    from great_expectations.data_context.types.base import ProgressBarsConfig

    return ProgressBarsConfig(globally=False, metric_calculations=False)


def _exception_message(info: Any) -> str | None:
    """GX's exception_info is either one dict or a dict of dicts keyed by metric id."""
    if not info:
        return None
    entries = [info] if "raised_exception" in info else list(info.values())
    messages = [e.get("exception_message") for e in entries if e.get("raised_exception")]
    return "; ".join(str(m) for m in messages) if messages else None


def _example_rows(
    df: pd.DataFrame,
    positions: np.ndarray,
    rule: Rule,
    suite: Suite,
    show_columns: Sequence[str] | None,
) -> list[dict]:
    if show_columns is not None:
        columns = [c for c in show_columns if c in df.columns]
    else:
        others = [c for c in (*suite.columns, *df.columns) if c != rule.column]
        columns = [rule.column, *list(dict.fromkeys(others))[:4]]
    rows = df.iloc[positions][columns]
    return [
        {str(k): _json_safe(v) for k, v in zip(columns, row, strict=True)}
        for row in rows.itertuples(index=False, name=None)
    ]


def _failure_lines(rule: Rule, failure: dict, rows_in: int) -> list[str]:
    n = failure["n_failed"]
    shown = failure["rows"][:N_EXAMPLES_IN_MESSAGE]
    examples = ", ".join(_short(e) for e in failure["examples"][:N_EXAMPLES_IN_MESSAGE])
    if rule.quarantine:
        verdict = "set aside"
        if not failure["passed"] and rule.mostly < 1.0:
            verdict += f", and fewer than {rule.mostly:.1%} pass, so the run stops"
    elif failure["passed"]:
        verdict = f"kept, at least {rule.mostly:.1%} pass"
    else:
        verdict = "the run stops"
    lines = [
        f"  column '{rule.column}', rule {rule.describe()}: {n} of {rows_in} rows fail ({verdict}), "
        f"e.g. row{'s' if len(shown) > 1 else ''} {', '.join(str(r) for r in shown)}: [{examples}]"
    ]
    if rule.hint:
        lines.append(f"  hint: {rule.hint}")
    return lines


def _short(row: dict) -> str:
    def value(v: Any) -> str:
        if isinstance(v, str) and len(v) > _MAX_TEXT_IN_MESSAGE:
            return repr(v[: _MAX_TEXT_IN_MESSAGE - 3] + "...")
        return repr(v)

    return "{" + ", ".join(f"{k!r}: {value(v)}" for k, v in row.items()) + "}"


def _write_quarantine(
    df: pd.DataFrame,
    quarantined: np.ndarray,
    failed_names: dict[int, list[str]],
    suite_name: str,
    quarantine_dir: Path | None,
) -> str | None:
    """Write the set-aside rows to quarantine_dir/<suite>.csv; remove a stale file if there are none."""
    if quarantine_dir is None:
        return None
    path = Path(quarantine_dir) / f"{suite_name}.csv"
    if not quarantined.any():
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    positions = np.flatnonzero(quarantined)
    rows = df.iloc[positions].assign(
        **{FAILED_RULES_COLUMN: ["; ".join(failed_names[p]) for p in positions.tolist()]}
    )
    unnamed = df.index.nlevels == 1 and df.index.name is None
    tmp = path.with_name(path.name + ".tmp")
    rows.to_csv(tmp, index=True, index_label="_index" if unnamed else None)
    tmp.replace(path)
    return str(path)


def _json_safe(value: Any) -> Any:
    """Plain JSON types: NaN/NA/NaT -> None, numpy scalars -> Python, timestamps -> ISO-8601."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if pd.isna(value):
        return None
    if isinstance(value, pd.Timestamp | np.datetime64):
        return pd.Timestamp(value).isoformat()
    return str(value)


def write_data_docs(records: Sequence[dict], out_dir: Path, run_name: str) -> Path:
    """Great Expectations Data Docs of a run's contract validations: a static site in
    `out_dir` (replaced), one page per validation and per suite, `out_dir/index.html` listing
    them. `records` are `ContractResult.validation_record()`s; `run_name` (the run id) names
    the validations. Returns the index page. The pages load their styles and scripts from
    CDNs (GX's design): offline they show unstyled, but complete.
    """
    gx = _gx()
    from great_expectations.core.expectation_validation_result import (
        ExpectationSuiteValidationResultSchema,
    )
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    context = gx.get_context(mode="ephemeral")
    site = "forewarn_run"
    context.add_data_docs_site(site, {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(out_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    schema = ExpectationSuiteValidationResultSchema()
    seen_batches: dict[str, int] = defaultdict(int)
    for record in records:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = schema.load(record["validation"])
        name = str(record["suite"])
        if name not in {s.name for s in context.suites.all()}:
            context.suites.add(gx.ExpectationSuite(
                name=name,
                expectations=[_suite_entry(r["expectation_config"])
                              for r in record["validation"]["results"]],
            ))
        batch = Path(str(record["source"])).name or name
        seen_batches[batch] += 1
        if seen_batches[batch] > 1:
            batch = f"{batch}-{seen_batches[batch]}"
        run_time = (result.meta.get("run_id") or {}).get("run_time")
        result.meta["run_id"] = {"run_name": run_name, "run_time": run_time}  # shown on the page
        key = ValidationResultIdentifier(
            expectation_suite_identifier=ExpectationSuiteIdentifier(name=name),
            run_id=RunIdentifier(run_name=run_name, run_time=run_time),
            batch_identifier=batch,
        )
        context.validation_results_store.set(key, result)
    context.build_data_docs(site_names=[site])
    return out_dir / "index.html"


def _suite_entry(config: dict) -> dict:
    """An expectation of a validation result as a new suite's entry (no id, no batch)."""
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    return {"type": config["type"], "kwargs": kwargs, "meta": config.get("meta") or {}}
