"""Raw tables as in Tables D.5 (segmentation) and D.4 (classification): CSV, Markdown, LaTeX.

    python analysis/tables.py [--mlflow-uri URI] [--out DIR]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from segclass.analysis.cli import options, parser, run  # noqa: E402
from segclass.analysis.report_builder import build_tables, select_runs  # noqa: E402


def main(argv=None) -> int:
    opts = options(parser(__doc__).parse_args(argv))

    def body() -> int:
        files, _, _ = build_tables(select_runs(opts), opts)
        print("\n".join(str(f) for f in files))
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
