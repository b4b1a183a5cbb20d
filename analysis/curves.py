"""Normalized curves as in Fig. 5 (relative to s = 100%) and Fig. 6 (relative to c = 50%): PNG and SVG.

    python analysis/curves.py [--mlflow-uri URI] [--out DIR] [--with-paper]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segclass.analysis.cli import options, parser, run  # noqa: E402
from segclass.analysis.report_builder import build_curves, build_tables, select_runs  # noqa: E402
from segclass.analysis.runs import init_labels  # noqa: E402


def main(argv=None) -> int:
    opts = options(parser(__doc__).parse_args(argv))

    def body() -> int:
        runs = select_runs(opts)
        _, seg_summary, cls_summary = build_tables(runs, opts)
        print("\n".join(str(f) for f in build_curves(seg_summary, cls_summary, opts, init_labels(runs))))
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
