"""The `recindex` command line: data | train | evaluate | index | serve | wal | recommend | openapi |
experiment | report.

Each group of commands is a module of its own; `present` builds what they print. Importing this
package registers every command on `app`.
"""

# isort: off
# Imported in the order `recindex --help` lists the commands.
from recindex.cli import train_commands, recommend_command, index_commands, embed_command
from recindex.cli import serve_commands, data_commands, experiment_commands, plan_command
from recindex.cli.app import DATA_DIR_ORDER, app, main
from recindex.cli.parsing import parse_assignments, parse_duration

# isort: on

__all__ = [
    "DATA_DIR_ORDER",
    "app",
    "data_commands",
    "embed_command",
    "experiment_commands",
    "index_commands",
    "main",
    "parse_assignments",
    "parse_duration",
    "plan_command",
    "recommend_command",
    "serve_commands",
    "train_commands",
]
