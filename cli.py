"""parcel: the one command-line entry point (stack, migrations, topologies, tools)."""

def main() -> None:  # replaced below once the CLI exists
    raise SystemExit("not ready")
