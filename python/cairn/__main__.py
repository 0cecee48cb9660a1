"""``python -m cairn``: the command line (docs/API.md section 4), in cairn.cli."""

from cairn.cli import entry, main

__all__ = ["main"]

if __name__ == "__main__":
    entry()
