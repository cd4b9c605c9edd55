"""Registered data sources; each module registers itself (see ``base.DataSource``)."""
