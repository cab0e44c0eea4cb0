import Foundation

/// Runs a command and returns its exit status, standard output and standard error; the wait
/// sleeps the task, never a thread of the pool.
public func run(
    _ executable: String, _ arguments: [String], timeout: TimeInterval = 30
) async throws -> (status: Int32, output: String, error: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    var environment = ProcessInfo.processInfo.environment
    environment["SWIFT_BACKTRACE"] = "enable=no"
    environment["PATH"] = environment["PATH"] ?? "/usr/bin:/bin:/usr/sbin:/sbin"
    process.environment = environment
    let directory = makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    _ = FileManager.default.createFile(atPath: directory + "/out", contents: nil)
    _ = FileManager.default.createFile(atPath: directory + "/err", contents: nil)
    process.standardOutput = FileHandle(forWritingAtPath: directory + "/out")
    process.standardError = FileHandle(forWritingAtPath: directory + "/err")
    try process.run()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { try await Task.sleep(for: .milliseconds(10)) }
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    let outData = FileManager.default.contents(atPath: directory + "/out") ?? Data()
    let errData = FileManager.default.contents(atPath: directory + "/err") ?? Data()
    return (
        process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self)
    )
}

/// The `tdnd` binary built beside the test bundle.
public var tdndPath: String {
    let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for candidate in [bundle, bundle.deletingLastPathComponent()] {
        let path = candidate.appendingPathComponent("tdnd").path
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    // Sources/TDNTestSupport/Process.swift → the package root.
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    return root.appendingPathComponent(".build/debug/tdnd").path
}

/// `statements` run on the SQLite file `database` by Debian's sqlite3 (to damage or forge a
/// ledger as an attacker with the file would).
public func sqlite(
    _ database: String, _ statements: String
) async throws -> (
    status: Int32, output: String, error: String
) {
    try await run("/usr/bin/sqlite3", [database, statements])
}
