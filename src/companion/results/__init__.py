"""Results of chapter runs: the contract every chapter writes (:mod:`.contract`), the verdict rules that decide its
claims (:mod:`.verdict`, :mod:`.comparison`, :mod:`.convergence`, :mod:`.guards`), the committed reference runs (:mod:`.reference`), run-to-reference comparison
(:mod:`.compare`) and the reproduction report (:mod:`.report`)."""
from .contract import (ClaimsFile, Claim, Results, atomic_write_bytes, atomic_write_json, git_commit, load_claims,
                       package_versions, peak_memory_mb, readable_number, results_root, style_table)
from .format import scoreboard_frame
from .report import collect_scoreboards, report_markdown
from .comparison import comparison_verdict
from .convergence import Convergence, converged
from .guards import degenerate_predictions, no_better_than, stalled_loss
from .verdict import Verdict, all_of, paired_verdict, property_verdict, threshold_verdict

__all__ = ["Claim", "ClaimsFile", "Convergence", "Results", "Verdict", "comparison_verdict", "converged", "atomic_write_bytes", "atomic_write_json",
           "all_of", "collect_scoreboards", "degenerate_predictions", "no_better_than", "git_commit", "load_claims", "package_versions",
           "paired_verdict", "peak_memory_mb", "property_verdict", "readable_number", "report_markdown",
           "results_root", "scoreboard_frame", "stalled_loss", "style_table", "threshold_verdict"]
