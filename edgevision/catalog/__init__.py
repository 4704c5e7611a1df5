"""The model catalog: what can be installed, from where, with which checksum; fetching and resolving models."""

from edgevision.catalog.entries import Catalog, LabelEntry, ModelEntry, Source, load_catalog
from edgevision.catalog.fetch import FetchReport, fetch_entry, verify_installed
from edgevision.catalog.resolve import ResolvedModel, resolve_model

__all__ = [
    "Catalog",
    "FetchReport",
    "LabelEntry",
    "ModelEntry",
    "ResolvedModel",
    "Source",
    "fetch_entry",
    "load_catalog",
    "resolve_model",
    "verify_installed",
]
