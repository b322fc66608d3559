"""``camcli audit``: look across a finished run's maps for the strategies a model uses, per class.

maps.py (the saved maps, downsampled to one grid), spectral.py (spectral clustering, the number
of clusters from the eigengap), strategies.py (a class's clusters, mean maps, exemplars,
outliers), flags.py (the signatures of a shortcut, as hypotheses), audit.py (``camcli.audit``:
classes, gates, audit.csv and audit.json). The page is ``camcli/output/audit_page.py``.
"""

from camcli.auditing.audit import AuditReport, audit

__all__ = ["AuditReport", "audit"]
