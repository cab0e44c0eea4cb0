import ConfigFile
import Logging

#if canImport(Glibc)
import Glibc
#endif

/// Recompiles the zones off the query path and publishes the result; on any error the old
/// snapshot keeps serving and every error is logged as `file:line: message`. `Loaded` is what a
/// load makes (a `ZoneSet`, or the daemon's whole configuration around one): the reloader only
/// decides when to load and hands a success to `publish`, the one place it is served from.
///
/// The watcher (`reloadIfChanged`) is careful about files being written: it loads a change
/// only once the files have kept the same size and modification time for `settle` seconds,
/// and refuses a zone whose content changed without a serial increase (a file rewritten in
/// place is read half-written otherwise). `reload` (SIGHUP) loads at once and skips the serial
/// check: the operator asked for it.
public final class ZoneReloader<Loaded: Sendable>: @unchecked Sendable {
    public enum Outcome: Equatable, Sendable {
        case reloaded(zones: Int)
        case unchanged
        /// The files changed and are not yet stable for the settle interval.
        case settling
        case failed(errors: [String])
    }

    /// `previous` is the zones being served for a watcher's reload (check the serials against
    /// them), nil for a forced one.
    public typealias Load = @Sendable (_ previous: [Zone]?) -> Result<Loaded, ConfigErrors>

    public let directory: String
    private let logger: Logger
    private let load: Load
    private let zoneSet: @Sendable (Loaded) -> ZoneSet
    private let publish: @Sendable (Loaded) -> Void
    /// The zones served now (a watcher's reload checks their serials against the new ones).
    private let served: @Sendable () -> [Zone]
    private let settle: Double
    private let clock: @Sendable () -> Double
    // Touched only by the reload path, which the caller serialises (one ReloadService).
    private var fingerprint: ZoneSet.Fingerprint
    private var failedFingerprint: ZoneSet.Fingerprint? = nil
    /// A change seen on disk and since when it has been unchanged.
    private var candidate: (fingerprint: ZoneSet.Fingerprint, since: Double)? = nil

    /// `load` compiles everything the snapshot is made of, `zoneSet` finds the zones in what it
    /// made (their fingerprint says which files to watch besides the directory's `*.zone`
    /// files), and `publish` serves it. `settle`: seconds a change must stay unchanged before
    /// the watcher loads it.
    public init(
        directory: String, fingerprint: ZoneSet.Fingerprint, logger: Logger, settle: Double = 0,
        clock: @escaping @Sendable () -> Double = monotonicSeconds, served: @escaping @Sendable () -> [Zone],
        load: @escaping Load, zoneSet: @escaping @Sendable (Loaded) -> ZoneSet,
        publish: @escaping @Sendable (Loaded) -> Void
    ) {
        self.directory = directory
        self.load = load
        self.zoneSet = zoneSet
        self.publish = publish
        self.served = served
        self.logger = logger
        self.settle = settle
        self.clock = clock
        self.fingerprint = fingerprint
    }

    /// Reloads when a zone file (or one of its includes) changed since the last attempt and
    /// has been stable for the settle interval.
    public func reloadIfChanged() -> Outcome {
        let current = ZoneSet.Fingerprint(directory: directory, extraFiles: Array(fingerprint.entries.keys))
        guard current != fingerprint else {
            candidate = nil
            return .unchanged
        }
        if let failedFingerprint, failedFingerprint == current { return .unchanged }
        if settle > 0 {
            let now = clock()
            guard let candidate, candidate.fingerprint == current else {
                self.candidate = (current, now)
                return .settling
            }
            guard now - candidate.since >= settle else { return .settling }
        }
        candidate = nil
        return reload(previous: served())
    }

    /// Reloads unconditionally (SIGHUP).
    public func reload() -> Outcome { reload(previous: nil) }

    private func reload(previous: [Zone]?) -> Outcome {
        switch load(previous) {
        case .success(let loaded):
            publish(loaded)
            let set = zoneSet(loaded)
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

extension ZoneReloader where Loaded == ZoneSet {
    /// A reloader of the zones of `directory` alone (or what `load` makes), published to
    /// `store`.
    public convenience init(
        directory: String, fingerprint: ZoneSet.Fingerprint, store: SnapshotStore, logger: Logger, settle: Double = 0,
        clock: @escaping @Sendable () -> Double = monotonicSeconds, load: Load? = nil
    ) {
        self.init(
            directory: directory, fingerprint: fingerprint, logger: logger, settle: settle, clock: clock,
            served: { store.load().zones },
            load: load ?? { previous in ZoneSet.load(directory: directory, previous: previous) },
            zoneSet: { $0 }, publish: { store.publish($0.snapshot) })
    }

    /// A reloader whose last load is `initial` (only its fingerprint is kept).
    public convenience init(
        directory: String, initial: ZoneSet, store: SnapshotStore, logger: Logger, settle: Double = 0,
        clock: @escaping @Sendable () -> Double = monotonicSeconds, load: Load? = nil
    ) {
        self.init(
            directory: directory, fingerprint: initial.fingerprint, store: store, logger: logger, settle: settle,
            clock: clock, load: load)
    }
}
