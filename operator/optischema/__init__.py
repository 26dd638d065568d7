"""OptiSchema Operator: PostgreSQL tuning the way a careful DBA would do it, under kubectl and Git control."""

__version__ = "0.1.0"
