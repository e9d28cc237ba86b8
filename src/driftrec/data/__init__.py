"""Datasets and catalogs: loaders that turn files into validated driftrec records.

Used by production (``driftrec ingest``) and by the evaluation harness alike, so it lives below both.
"""

from driftrec.data.catalog import load_catalog
from driftrec.data.dataset import Dataset, DatasetError, LoadReport
from driftrec.data.movielens import load_grouplens_100k, load_movielens_100k

__all__ = ["Dataset", "DatasetError", "LoadReport", "load_catalog", "load_grouplens_100k", "load_movielens_100k"]
