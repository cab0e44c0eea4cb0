public enum TDNTestSupportModule {}
