"""Raw tables as in Tables D.5 (segmentation) and D.4 (classification): CSV, Markdown, LaTeX.

    python analysis/tables.py [--mlflow-uri URI] [--out DIR]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segclass.analysis.cli import options, parser  # noqa: E402
from segclass.analysis.report import build_tables  # noqa: E402
from segclass.analysis.runs import load_runs  # noqa: E402


def main(argv=None) -> int:
    opts = options(parser(__doc__).parse_args(argv))
    files, _, _ = build_tables(load_runs(opts.mlflow_uri, opts.experiment, opts.dataset), opts)
    print("\n".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
