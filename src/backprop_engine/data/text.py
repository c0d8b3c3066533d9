"""Plain-text views of data reports (``backprop data check`` / ``data inspect``); trained spans are marked."""

from __future__ import annotations

from .pipeline import DataReport

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"
BAR_WIDTH = 40


def format_check(report: DataReport) -> str:
    formats = ", ".join(f"{name} {count}" for name, count in report.formats.items()) or "no good rows"
    lines = [f"{report.rows_read} rows read ({formats}); {report.bad_row_count} bad"]
    lines += [f"text file {path}: documents split by {rule}" for path, rule in report.text_split.items()]
    for row in report.bad_rows:
        lines.append(f"{row}" + (f"  (hint: {row.hint})" if row.hint else ""))
    if report.bad_row_count > len(report.bad_rows):
        lines.append(f"... and {report.bad_row_count - len(report.bad_rows)} more")
    return "\n".join(lines)


def format_report(report: DataReport) -> str:
    check = format_check(report).splitlines()
    lines = check[: 1 + len(report.text_split)]
    lines += [f"warning: {w}" for w in report.warnings]
    lines += [f"  bad: {row}" for row in report.bad_rows[:5]]
    removed = [f"{step.name}: {step.removed}" for step in report.filters if step.removed]
    lines.append(f"filters removed: {', '.join(removed) or 'nothing'}")
    if report.sampled_rows:
        lines.append(f"token statistics over a seeded sample of {report.sampled_rows} rows")
    stats = report.lengths
    if stats:
        lines.append(
            f"tokens per example: p50 {stats.p50}  p95 {stats.p95}  p99 {stats.p99}  max {stats.max}  mean {stats.mean:.1f}"
        )
        peak = max(count for _, _, count in stats.histogram) or 1
        for low, high, count in stats.histogram:
            lines.append(f"  {low:>6}-{high:<6} {'#' * round(BAR_WIDTH * count / peak):<{BAR_WIDTH}} {count}")
    origin = "from the data (p99, rounded up to 64)" if report.max_seq_len_from_data else "as set"
    lines.append(f"max_seq_len {report.max_seq_len} {origin}; {report.truncated} rows longer")
    lines.append(
        f"{report.train_examples} train / {report.eval_examples} eval examples; {report.trained_fraction:.1%} of tokens trained"
    )
    if report.mask_schemes:
        lines.append(
            "masks for this chat template: "
            + ", ".join(f"{count} conversations {scheme}" for scheme, count in report.mask_schemes.items())
        )
    for sample in report.samples:
        lines.append(
            f"\n--- {sample.origin} ({sample.format}); trained text is between {TRAINED_OPEN} {TRAINED_CLOSE}"
        )
        lines.append(
            "".join(
                f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained else text for text, trained in sample.spans
            )
        )
    return "\n".join(lines)
