"""``python -m tako``: the same command line as ``tako``."""

from tako.app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
