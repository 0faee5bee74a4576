"""``shapebias protocols``: list the published experiments and their settings.

shapebias protocols                        one line per protocol: name, job, settings
shapebias protocols table1                 the protocols whose name starts with table1
shapebias protocols table1.code.topk.IN-S1 one protocol in full: each value and its source
"""

from __future__ import annotations

import argparse
import sys

from shapebias.protocols import REGISTRY, Protocol


def detail(p: Protocol) -> str:
    lines = [
        f"{p.name}: {p.title}",
        f"  job: {p.task}    table: {p.table}",
        f"  flags: --protocol {p.name}  (= {' '.join(p.cli_args())})",
        "  settings:",
    ]
    width = max(map(len, [*p.settings, *p.implied]))
    lines += [
        f"    {k:<{width}}  {v}    [{s.source}]"
        for k, (v, s) in ((k, (p.values()[k], s)) for k, s in p.settings.items())
    ]
    if p.implied:
        lines.append("  fixed in the job's code under these settings:")
        lines += [f"    {k:<{width}}  {s.value}    [{s.source}]" for k, s in p.implied.items()]
    if p.deviations:
        lines.append("  known deviations from the original:")
        lines += [f"    - {d}" for d in p.deviations]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="shapebias protocols", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "name",
        nargs="?",
        default="",
        help="a protocol, or the start of names, e.g. table1, fig1.alexnet (default: all)",
    )
    args = ap.parse_args(argv)
    if args.name in REGISTRY:
        print(detail(REGISTRY[args.name]))
        return 0
    chosen = [p for p in REGISTRY.values() if p.name.startswith(args.name)]
    if not chosen:
        families = sorted({n.split(".")[0] for n in REGISTRY})
        print(f"error: no protocol starts with {args.name!r}; families: {', '.join(families)}", file=sys.stderr)
        return 2
    width = max(len(p.name) for p in chosen)
    for p in chosen:
        print(f"{p.name:<{width}}  {p.task:<12}  {' '.join(p.cli_args())}")
    print(f"\n{len(chosen)} protocol(s); `shapebias protocols NAME` shows one with the source of each value")
    return 0


if __name__ == "__main__":
    sys.exit(main())
