import Logging

/// Recompiles the zones off the query path and publishes the result; on any error the old
/// snapshot keeps serving and every error is logged as `file:line: message`.
public final class ZoneReloader: @unchecked Sendable {
    public enum Outcome: Equatable, Sendable {
        case reloaded(zones: Int)
        case unchanged
        case failed(errors: [String])
    }

    public let directory: String
    public let store: SnapshotStore
    private let logger: Logger
    // Touched only by the reload path, which the caller serialises (one ReloadService).
    private var fingerprint: ZoneSet.Fingerprint
    private var failedFingerprint: ZoneSet.Fingerprint? = nil

    public init(directory: String, initial: ZoneSet, store: SnapshotStore, logger: Logger) {
        self.directory = directory
        self.store = store
        self.logger = logger
        self.fingerprint = initial.fingerprint
    }

    /// Reloads when a zone file (or one of its includes) changed since the last attempt.
    public func reloadIfChanged() -> Outcome {
        guard fingerprint.changed(directory: directory) else { return .unchanged }
        if let failedFingerprint, !failedFingerprint.changed(directory: directory) { return .unchanged }
        return reload()
    }

    /// Reloads unconditionally (SIGHUP).
    public func reload() -> Outcome {
        switch ZoneSet.load(directory: directory) {
        case .success(let set):
            store.publish(set.snapshot)
            fingerprint = set.fingerprint
            failedFingerprint = nil
            let zones = set.snapshot.zones.map { "\($0.origin) serial \($0.serial)" }.joined(separator: ", ")
            logger.info("reloaded zones: \(zones)")
            return .reloaded(zones: set.snapshot.zones.count)
        case .failure(let errors):
            for error in errors.errors { logger.error("\(error)") }
            logger.error("reload failed with \(errors.errors.count) error(s); still serving the previous zones")
            failedFingerprint = ZoneSet.Fingerprint(directory: directory, extraFiles: Array(fingerprint.entries.keys))
            return .failed(errors: errors.errors.map(\.description))
        }
    }
}
