"""Deployment on separate silo machines: signed app bundles and the verifying ClientApp launcher."""
