"""Write a new Alembic revision by comparing the models with a scratch catalog at head.

Usage: python scripts/new_migration.py "what changed"   (then read the file it writes, and keep it)
"""

import sys
import tempfile
from pathlib import Path

from alembic import command

from apolo_node.catalog.engine import make_engine
from apolo_node.catalog.migrate import alembic_config, upgrade


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'scratch.sqlite'}"
        engine = make_engine(url)
        upgrade(engine)
        acfg = alembic_config(url)
        count = len(list((Path(acfg.get_main_option("script_location")) / "versions").glob("*.py")))
        number = f"{count + 1:04d}"
        acfg.set_main_option("file_template", f"{number}_%%(slug)s")
        command.revision(acfg, message=sys.argv[1], autogenerate=True, rev_id=number)


if __name__ == "__main__":
    main()
