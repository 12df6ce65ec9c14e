"""The MLflow app plugin: MLflow's basic-auth app with API-key authentication in front."""
