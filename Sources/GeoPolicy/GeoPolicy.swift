public enum GeoPolicyModule {}
