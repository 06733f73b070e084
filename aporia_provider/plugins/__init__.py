"""Airflow UI plugins shipped with the provider: the sync view (``sync_view.py``)."""
