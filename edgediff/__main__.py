"""``python -m edgediff``: the same CLI as the ``edgediff`` command."""

from edgediff.tools.cli import main

if __name__ == "__main__":
    main()
