"""The store's databases of both dialects (``tests.storedb``) for the unit tests that take
``store_url``, ``new_store_url`` or ``sqlite_template``."""

from tests.storedb import new_store_url, postgres_template, sqlite_template, store_url

__all__ = ["new_store_url", "postgres_template", "sqlite_template", "store_url"]
