import ConfigFile

#if canImport(Glibc)
import Glibc
#endif

/// The zones of a directory compiled into a snapshot, with a fingerprint of the files they came
/// from so that a watcher can tell when to reload.
public struct ZoneSet: Sendable {
    public let snapshot: Snapshot
    public let fingerprint: Fingerprint
    /// What else went into the snapshot, for the reload log line.
    public let summary: String

    public init(snapshot: Snapshot, fingerprint: Fingerprint, summary: String = "") {
        self.snapshot = snapshot
        self.fingerprint = fingerprint
        self.summary = summary
    }

    /// Loads, checks and compiles every zone of `directory`; any error fails the whole set.
    /// With `previous` (a watcher's reload), a zone whose content changed without a serial
    /// increase is an error too (`Zone.unchangedSerials`).
    public static func load(directory: String, previous: [Zone]? = nil) -> Result<ZoneSet, ConfigErrors> {
        switch ZoneCompiler.load(directory: directory) {
        case .failure(let errors):
            return .failure(errors)
        case .success(let zones):
            if let previous {
                let unchanged = Zone.unchangedSerials(previous: previous, next: zones)
                if !unchanged.isEmpty { return .failure(ConfigErrors(unchanged)) }
            }
            let fingerprint = Fingerprint(directory: directory, extraFiles: zones.flatMap { $0.files })
            return .success(ZoneSet(snapshot: SnapshotBuilder.build(zones), fingerprint: fingerprint))
        }
    }

    /// Names, sizes and modification times of the zone files and their includes.
    public struct Fingerprint: Hashable, Sendable {
        var entries: [String: [Int]]

        public init(directory: String, extraFiles: [String]) {
            var files = Set(extraFiles)
            for name in ZoneCompiler.zoneFiles(in: directory) ?? [] {
                files.insert(directory.hasSuffix("/") ? directory + name : directory + "/" + name)
            }
            entries = [:]
            for file in files {
                var info = stat()
                if stat(file, &info) == 0 {
                    entries[file] = [
                        Int(info.st_size), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec), Int(info.st_ino),
                    ]
                } else {
                    entries[file] = []
                }
            }
        }

        /// Whether the files on disk differ from this fingerprint (includes named by the last
        /// good load are checked too).
        public func changed(directory: String) -> Bool {
            Fingerprint(directory: directory, extraFiles: Array(entries.keys)) != self
        }
    }
}
