"""dj_operator: the kopf operator that runs DataJuicerJob resources (in development)."""
