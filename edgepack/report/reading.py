"""Reading a report.json a user names (to re-judge it, or as a baseline): one-line errors for a missing, corrupt or
newer-version file, never a traceback."""

from __future__ import annotations

import re
from pathlib import Path

from edgepack import __version__
from edgepack.errors import UsageError, one_line
from edgepack.records import Report


def read_report(path: Path, role: str = "report") -> Report:
    """The report at `path`. `role` names it in errors ("report", "baseline")."""
    if not path.is_file():
        raise UsageError(f"{path}: no such {role}; pass the report.json that `edgepack build` wrote")
    try:
        report = Report.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"{path}: not an edgepack report.json ({one_line(exc)})") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the {role} ({one_line(exc)})") from None
    # a newer edgepack may have added fields this one would silently drop, and judged without them
    if _version(report.edgepack_version) > _version(__version__):
        raise UsageError(f"{path}: written by edgepack {report.edgepack_version}, newer than this edgepack "
                         f"{__version__}; upgrade edgepack to read this {role}")
    return report


def _version(text: object) -> tuple[int, ...]:
    """The leading numeric release of a version string: "0.2.0rc1" -> (0, 2, 0)."""
    parts = []
    for piece in str(text).split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)
