"""Label-efficiency studies: any bundle's arms x label budgets x seeds, declared in its configs/study.yaml."""

from cellzoo.studies.engine import run_study
from cellzoo.studies.report import markdown_table, summarise, write_report
from cellzoo.studies.spec import load_study

__all__ = ["load_study", "markdown_table", "run_study", "summarise", "write_report"]
