"""Rewrite every golden file from the writers: ``python -m tests.rails.golden.regenerate``."""

from __future__ import annotations

from tests.rails.golden.cases import CASES, FILES, build


def main() -> None:
    FILES.mkdir(exist_ok=True)
    for stale in FILES.iterdir():
        stale.unlink()
    for case in CASES:
        case.path.write_bytes(build(case))
        print(case.path.relative_to(FILES.parent.parent.parent.parent))


if __name__ == "__main__":
    main()
