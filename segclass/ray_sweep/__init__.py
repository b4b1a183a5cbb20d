"""The paper's study as a Ray Tune sweep with MLflow tracking (imports Ray only when run)."""
