public enum LedgerSyncModule {}
