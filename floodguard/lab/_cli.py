"""``python -m floodguard.lab._cli ARGS`` runs ``floodguard ARGS`` with this interpreter, so the
lab applies its rules and runs its guard through the real command line even where the
``floodguard`` console script is not on PATH."""

from floodguard.cli import main

if __name__ == "__main__":
    main(prog_name="floodguard")
