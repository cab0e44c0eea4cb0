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
    private let load: @Sendable () -> Result<ZoneSet, ConfigErrors>
    // Touched only by the reload path, which the caller serialises (one ReloadService).
    private var fingerprint: ZoneSet.Fingerprint
    private var failedFingerprint: ZoneSet.Fingerprint? = nil

    /// `load` compiles everything the snapshot is made of (by default the zones of `directory`);
    /// its fingerprint says which files to watch besides the directory's `*.zone` files.
    public init(
        directory: String, initial: ZoneSet, store: SnapshotStore, logger: Logger,
        load: (@Sendable () -> Result<ZoneSet, ConfigErrors>)? = nil
    ) {
        self.directory = directory
        self.load = load ?? { ZoneSet.load(directory: directory) }
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
        switch load() {
        case .success(let set):
            store.publish(set.snapshot)
            fingerprint = set.fingerprint
            failedFingerprint = nil
            let zones = set.snapshot.zones.map { "\($0.origin) serial \($0.serial)" }.joined(separator: ", ")
            logger.info("reloaded: \(zones)\(set.summary.isEmpty ? "" : "; " + set.summary)")
            return .reloaded(zones: set.snapshot.zones.count)
        case .failure(let errors):
            for error in errors.errors { logger.error("\(error)") }
            logger.error("reload failed with \(errors.errors.count) error(s); still serving the previous configuration")
            failedFingerprint = ZoneSet.Fingerprint(directory: directory, extraFiles: Array(fingerprint.entries.keys))
            return .failed(errors: errors.errors.map(\.description))
        }
    }
}
