"""``python -m harness.demo``: run the demo target."""

from .server import command

if __name__ == "__main__":
    command()
