"""``python -m cervixwsi.cli``: the ``cervixwsi`` command line."""

from cervixwsi.cli import main

if __name__ == "__main__":
    main()
