"""The report page: one self-contained HTML file (styles and plots inline, no network).

``render_page(results, ...)`` turns a loaded results file into the HTML text:
verdict, claims, benchmarks, plots, per-suite comparison tables, environment.
"""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path

import pandas as pd

from parity.bench.method import METHOD
from parity.bench.table import bench_frame
from parity.report import (
    analysis,
    claims,
    families,
    long_context,
    mutation,
    plots,
    quantized,
    study,
)
from parity.results import ResultsFile

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; }
.verdict { padding: .8em 1.2em; border-radius: 6px; margin-bottom: 1em; }
.passed { background: #e3f5e1; border: 2px solid #2e7d32; }
.failed { background: #fde4e1; border: 2px solid #c62828; }
.verdict h2 { border: none; margin: 0 0 .3em 0; }
table { border-collapse: collapse; font-size: .8em; margin: .5em 0 1em 0; }
th, td { border: 1px solid #ccc; padding: .2em .5em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.held { color: #2e7d32; font-weight: bold; } .not-held { color: #c62828; font-weight: bold; }
.not-measured { color: #777; } code, pre { background: #f6f6f6; padding: .1em .3em; }
pre { white-space: pre-wrap; } details { margin: .4em 0; } img { max-width: 100%; }
.scroll { max-height: 32em; overflow: auto; }
"""
_STATUS_CLASS = {
    claims.HELD: "held",
    claims.NOT_HELD: "not-held",
    claims.NOT_MEASURED: "not-measured",
}
# Per suite, the worst rows first (failed, then the largest share of the
# tolerance used). 5000 made a 4.8 MB page (issue 13: keep it under 2 MB; one
# row is ~400 bytes of HTML); every row is in the CSV written beside the page
# (``comparisons_csv_path``) and in the results file.
_MAX_TABLE_ROWS = 400


def _table(frame: pd.DataFrame, float_format: str = "{:.3g}") -> str:
    if frame.empty:
        return "<p><em>(no rows)</em></p>"
    return frame.to_html(
        index=False, border=0, na_rep="", float_format=float_format.format, classes="data"
    )


def _verdict_html(verdict: analysis.Verdict, reproduce_all: str) -> str:
    css = "passed" if verdict.passed else "failed"
    parts = [f'<div class="verdict {css}" id="verdict"><h2>Gate {verdict.label}</h2>']
    if verdict.problems:
        items = "".join(f"<li>{html.escape(p)}</li>" for p in verdict.problems[:50])
        more = len(verdict.problems) - 50
        parts.append(f"<p>What failed:</p><ul>{items}</ul>")
        if more > 0:
            parts.append(f"<p>... and {more} more (see the tables below).</p>")
    else:
        parts.append(
            "<p>Every test session finished with status 0 and every comparison passed.</p>"
        )
    commands = verdict.reproduce[:20] + [reproduce_all]
    parts.append("<p>Reproduce:</p><pre>" + html.escape("\n".join(commands)) + "</pre>")
    if verdict.notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in verdict.notes)
        parts.append(
            f"<details><summary>Notes ({len(verdict.notes)})</summary><ul>{items}</ul></details>"
        )
    return "".join(parts) + "</div>"


def _claims_html(claim_list: list[claims.Claim], table_id: str = "claims") -> str:
    rows = []
    for claim in claim_list:
        css = _STATUS_CLASS[claim.status]
        cells = [
            claim.claim,
            claim.measured,
            f'<span class="{css}">{claim.status}</span>',
            claim.basis,
        ]
        escaped = [html.escape(c) if i != 2 else c for i, c in enumerate(cells)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in escaped) + "</tr>")
    first = "seed's claim" if table_id == "claims" else "target"
    header = f"<tr><th>{first}</th><th>measured</th><th>status</th><th>basis</th></tr>"
    return f'<table id="{table_id}">{header}{"".join(rows)}</table>'


def _bench_html(bench: pd.DataFrame, bench_headers: list[dict]) -> str:
    if bench.empty:
        return "<p><em>No benchmark rows in this results file (run with benchmarks).</em></p>"
    columns = [
        "runtime", "target", "seq_q", "seq_kv", "impl", "peak_mb", "floor_mb", "peak_over_floor",
        "standard_over_this", "activation_mb", "latency_ms", "cpu_ms", "load", "status", "reason",
    ]  # fmt: skip
    shown = bench[[c for c in columns if c in bench]]
    method = (bench_headers[-1].get("method") if bench_headers else None) or METHOD
    items = "".join(
        f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in method.items()
    )
    return (
        '<div class="scroll">' + _table(shown) + "</div>"
        "<p>peak_over_floor: peak over the bytes of Q, K, V and O; standard_over_this: the"
        " runtime's standard (LiteRT: HLFB composite, PyTorch: math path) over this case;"
        " activation_mb: whole-model prefill peak minus decode peak; cpu_ms: process CPU time"
        " of a call; load: the machine's 1-minute load average around the case (2 cores:"
        " above 2, other work competed for the CPU and latencies are inflated).</p>"
        f"<details open><summary>Method</summary><ul>{items}</ul></details>"
    )


def _suites_html(frame: pd.DataFrame) -> str:
    parts = [_table(analysis.suite_summary(frame))]
    for suite, rows in frame.groupby("suite", sort=True):
        failed = int((~rows["passed"]).sum())
        shown = rows.head(_MAX_TABLE_ROWS)
        cut = (
            ""
            if len(rows) <= _MAX_TABLE_ROWS
            else (
                f" (the {_MAX_TABLE_ROWS} worst shown; all in the comparisons CSV beside this page)"
            )
        )
        parts.append(
            f"<details {'open' if failed else ''}><summary><b>{html.escape(str(suite))}</b>:"
            f" {len(rows)} comparisons, {failed} failed{cut}</summary>"
            f'<div class="scroll">{_table(shown.drop(columns=["suite"]))}</div></details>'
        )
    return "".join(parts)


def _environment_html(results: ResultsFile, duration_s: float | None) -> str:
    header = results.headers[0] if results.headers else {}
    facts = {**header.get("versions", {}), **header.get("machine", {})}
    for key in ("attention_impl", "model_builder", "tflite", "hypothesis_profile"):
        if key in header:
            facts[key] = header[key]
    if header.get("started"):
        started = datetime.datetime.fromtimestamp(header["started"], tz=datetime.UTC)
        facts["started (UTC)"] = started.strftime("%Y-%m-%d %H:%M:%S")
    facts["run duration"] = "unknown" if duration_s is None else f"{duration_s / 60:.1f} min"
    for footer in results.footers:
        label = f"{footer.get('suite', 'tests')} session"
        facts[label] = json.dumps(
            {k: v for k, v in footer.items() if k not in ("footer", "finished")}
        )
    frame = pd.DataFrame({"what": list(facts), "value": [str(v) for v in facts.values()]})
    return _table(frame)


def _images(plot_list: list[tuple[str, str]]) -> str:
    if not plot_list:
        return "<p><em>(no data to plot)</em></p>"
    return "".join(
        f'<figure><img alt="{html.escape(title)}" src="{uri}"><figcaption>{html.escape(title)}'
        "</figcaption></figure>"
        for title, uri in plot_list
    )


_FALSE_ALARM_NOTE = (
    "Each correct leg under each setting (python -m parity.false_alarms; the gate runs a"
    " subset on the tiny model, --full every setting and model): its worst error / allowed"
    " over every check (below 1 passes) and its failed checks, which must be 0."
)
_DETECTION_NOTE = (
    "python -m parity.detection_limits: bisection between the largest relative drift or"
    " additive bias of the attention output that the leg's logit and KV checks pass and the"
    " smallest they fail."
)

_QUANTIZED_NOTE = (
    "The TFLite legs converted with litert-torch's quantization recipes"
    " (parity/test_chain_quantized.py; the gate runs dynamic_int8 on tiny-random-llama,"
    " PARITY_QUANTIZE=all every recipe on tiny-random-llama and SmolLM2). Per leg, over every"
    " prompt's prefill positions and decode steps (teacher-forced with the oracle's tokens):"
    " mean and 99th-percentile KL(P_oracle || P_leg) in nats and the share of positions with"
    " the oracle's top-1 token, as llama.cpp's perplexity --kl-divergence reports them; no"
    " threshold. The first greedy divergence is the first step where the leg's own greedy"
    " choice left the oracle's. Flash vs std is a check: under one recipe flash must stay"
    " within the fp32 TFLite rule (the sum of both legs' fp32 allowances) of standard; recipe"
    " none is the fp32 TFLite pair, for comparison."
)


def _study_html(frame: pd.DataFrame, note: str) -> str:
    if frame.empty:
        return f"<p>Not measured in this results file. {html.escape(note)}</p>"
    return f"<p>{html.escape(note)}</p>" + _table(frame)


def comparisons_csv_path(page: Path) -> Path:
    """Where every comparison row of a page goes: ``index.html`` -> ``index.comparisons.csv``."""
    return page.with_name(page.stem + ".comparisons.csv")


def _overlays_html(overlays: list[tuple[str, str]]) -> str:
    """Links to the Model Explorer overlays of failed TFLite legs (``parity.overlay``)."""
    if not overlays:
        return "<p>None: no TFLite leg failed with a localisable graph.</p>"
    items = "".join(
        f'<li><a href="{html.escape(href)}">{html.escape(name)}</a></li>' for name, href in overlays
    )
    return (
        "<p>Per failed TFLite leg and prompt, each block output's error / budget (red above 1),"
        " propagated and isolated; load the .tflite in Model Explorer and add the file as per-node"
        f" data.</p><ul>{items}</ul>"
    )


def _families_html(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "<p>No chain cases in these results.</p>"
    return (
        "<p>Every leg of each litert-torch decoder family's zoo model, judged against the"
        " float64 oracle (worst error / allowed over its checks); a failed cell carries its"
        " diagnosis, an unsupported family its reason.</p>" + _table(frame)
    )


def render_page(
    results: ResultsFile, source: str, reproduce_all: str, duration_s=None, overlays=()
) -> str:
    """The whole page as HTML text. ``source`` names the results file shown on the page;
    ``overlays`` are (name, link) of the TFLite localisation overlays."""
    frame = analysis.comparison_frame(results)
    bench = bench_frame(results.rows)
    verdict = analysis.verdict(results)
    duration_s = analysis.run_duration_s(results) if duration_s is None else duration_s
    bench_headers = [h for h in results.headers if h.get("suite") == analysis.BENCH_SUITE]
    sections = [
        ("Claims of the seed, measured", _claims_html(claims.claims_table(results.rows))),
        (
            "Targets of the issue (LiteRT, one attention call)",
            _claims_html(claims.targets_table(results.rows), "targets"),
        ),
        (
            "Long-context targets (whole 2-layer TinyLlama-shaped model, chunked flash prefill)",
            _claims_html(long_context.long_context_targets(results.rows), "long-context"),
        ),
        (
            "Decoder families x legs",
            _families_html(families.family_matrix(results.rows, results.events)),
        ),
        ("Benchmarks: standard vs flash attention", _bench_html(bench, bench_headers)),
        ("Memory and latency against sequence length", _images(plots.bench_plots(bench))),
        ("Errors per leg and per layer", _images(plots.error_plots(frame))),
        ("Kernel errors found by the property suite", _images(plots.kernel_error_plots(frame))),
        (
            "False-alarm study: correct legs under settings that change rounding only",
            _study_html(study.false_alarm_table(results.rows), _FALSE_ALARM_NOTE),
        ),
        (
            "Detection limits: the smallest attention error each leg's checks catch",
            _study_html(study.detection_table(results.rows), _DETECTION_NOTE),
        ),
        (
            "Quantized legs: KL divergence from the float64 oracle, flash vs standard",
            _study_html(quantized.quantized_table(results.rows), _QUANTIZED_NOTE),
        ),
        (
            "Mutation testing: does the property gate kill small bugs in kernel.py?",
            mutation.section_html(mutation.load_summary()),
        ),
        (
            "Comparisons per suite (error, tolerance, margin = tolerance - error)",
            _suites_html(frame),
        ),
        ("TFLite localisation overlays (Model Explorer)", _overlays_html(list(overlays))),
        ("Environment", _environment_html(results, duration_s)),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>edge-flash parity report: gate {verdict.label}</title><style>{_STYLE}</style>"
        "</head><body><h1>edge-flash parity report</h1>"
        f"<p>Results: <code>{html.escape(source)}</code></p>"
        f"{_verdict_html(verdict, reproduce_all)}{body}</body></html>"
    )
