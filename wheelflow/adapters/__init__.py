"""The one domain package that imports Prefect."""
