public enum HealthProbeModule {}
