"""Finding a dataset's folders as users actually unpack them.

Three things go wrong between a challenge's zip and `--root`: the user
points at the folder above the dataset (the zip's top folder, or the
download folder holding it), an archive unzips into a folder of its own name
(`Maps1_T/Maps1_T/`), and macOS adds `__MACOSX/` and `._name` shadow files.
The helpers here resolve the first two to the real folder, with a line
saying what was found, or fail naming the folder to use; `visible` drops
the third.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Sequence

from segclass.errors import DatasetError, root_flag

log = logging.getLogger(__name__)

#: How many folders below --root a dataset is looked for when --root is not the dataset's folder.
SEARCH_DEPTH = 2


def visible(paths: Iterable[Path]) -> list[Path]:
    """`paths` without hidden files and macOS archive leftovers (`._name`, `__MACOSX/`), sorted."""
    return sorted(p for p in paths if not p.name.startswith(".") and "__MACOSX" not in p.parts)


def files_with_suffix(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Visible files directly in `folder` whose suffix (any case) is one of `suffixes`."""
    wanted = {s.lower() for s in suffixes}
    return visible(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted)


def unnest(folder: Path, suffixes: Sequence[str]) -> Path:
    """`folder`, or `folder/<same name>` when the archive was unzipped into a folder of its own name.

    The nested folder is taken when the outer one holds no files of the
    expected kind itself; a line says so, so a user who moves files knows where.
    """
    nested = folder / folder.name
    if nested.is_dir() and not files_with_suffix(folder, suffixes):
        log.info("using %s (the archive was unzipped into a folder of its own name)", nested)
        return nested
    return folder


def find_folder(parent: Path, names: Sequence[str], suffixes: Sequence[str]) -> Path | None:
    """The first of `names` under `parent` that exists (unnested), or None."""
    for name in names:
        if (parent / name).is_dir():
            return unnest(parent / name, suffixes)
    return None


def locate_dataset(root: Path, looks_right: Callable[[Path], bool], dataset: str, expected: str) -> Path:
    """The folder at or below `root` (up to SEARCH_DEPTH levels) that holds the dataset.

    `looks_right(folder)` says whether a folder is the dataset's top folder;
    `expected` describes it for the error ("the folder holding Photos/ and
    WSI/"). One match below `root` is used with an info line; several, or
    none, are an error that names what to pass as --root.
    """
    if looks_right(root):
        return root
    found: list[Path] = []
    level = [root]
    for _ in range(SEARCH_DEPTH):
        level = [child for folder in level for child in visible(folder.iterdir()) if child.is_dir()]
        found = [folder for folder in level if looks_right(folder)]
        if found:
            break
    if len(found) == 1:
        log.info("%s: using %s, found below %s %s", dataset, found[0], root_flag(), root)
        return found[0]
    if found:
        raise DatasetError(f"{root} holds {len(found)} {dataset} folders ({', '.join(str(f) for f in found)}); "
                           f"pass the one to build as {root_flag()}")
    raise DatasetError(f"{root} is not a {dataset} folder and none was found below it; pass {root_flag()} "
                       f"{expected}")
