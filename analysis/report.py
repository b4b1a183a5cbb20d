"""Build every table and figure of the paper from a sweep's MLflow runs, with an index.

    python analysis/report.py                      # results/mlflow.db -> results/analysis/index.md
    python analysis/report.py --with-paper --dataset bach
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from segclass.analysis.cli import options, parser, run  # noqa: E402
from segclass.analysis.report_builder import build_report  # noqa: E402
from segclass.cli_help import counted  # noqa: E402


def main(argv=None) -> int:
    args = parser(__doc__).parse_args(argv)

    def body() -> int:
        report = build_report(options(args))
        print(f"{counted(report.runs, 'run')} -> {len(report.files)} files; open {report.index}")
        return 0

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
