// swift-tools-version:6.1
import PackageDescription

// The products the targets use, by the name they are imported as.
let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let nioHTTP1 = Target.Dependency.product(name: "NIOHTTP1", package: "swift-nio")
let nioFoundation = Target.Dependency.product(name: "NIOFoundationCompat", package: "swift-nio")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let lifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let httpClient = Target.Dependency.product(name: "AsyncHTTPClient", package: "async-http-client")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")

/// A package from GitHub (the machine's mirror serves these addresses).
func github(_ repository: String, from version: Version) -> Package.Dependency {
    .package(url: "https://github.com/\(repository)", from: version)
}
func github(_ repository: String, _ range: Range<Version>) -> Package.Dependency {
    .package(url: "https://github.com/\(repository)", range)
}

let package = Package(
    name: "tdn-dns",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tdnd", targets: ["tdnd"]),
        .library(name: "TDNDNS", targets: ["TDNDNS"]),
    ],
    dependencies: [
        github("apple/swift-nio", from: "2.101.2"), github("apple/swift-argument-parser", from: "1.8.2"),
        github("apple/swift-log", from: "1.16.2"), github("apple/swift-atomics", from: "1.3.0"),
        github("swift-server/swift-service-lifecycle", from: "2.13.0"), github("jpsim/Yams", from: "6.2.2"),
        github("hummingbird-project/hummingbird", from: "2.28.1"),
        github("swift-server/async-http-client", from: "1.37.0"), github("apple/swift-metrics", from: "2.13.0"),
        github("swift-server/swift-prometheus", from: "2.4.1"), github("groue/GRDB.swift", from: "7.10.0"),
        github("vapor/postgres-nio", from: "1.33.2"), github("apple/swift-crypto", "3.12.3"..<"5.0.0"),
        github("apple/swift-nio-extras", from: "1.35.2"), github("apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // C libraries from Debian (see README: `make` installs them).
        .systemLibrary(name: "CLDNS", pkgConfig: "ldns", providers: [.apt(["libldns-dev"])]),
        .systemLibrary(name: "CMaxMindDB", pkgConfig: "libmaxminddb", providers: [.apt(["libmaxminddb-dev"])]),
        // recvmmsg/sendmmsg are not exported by Glibc's Swift overlay.
        .target(name: "CSocketIO"),
        // malloc_trim, to give memory freed by a snapshot swap back to the system.
        .target(name: "CMemory"),
        // Counts a thread's heap allocations, for the test that the query path makes none.
        .target(name: "CAllocationCounter"),

        // Configuration files: `ConfigError` (file:line: key: message), the YAML reader every loader uses.
        .target(name: "ConfigFile", dependencies: [.product(name: "Yams", package: "Yams")]),
        .target(
            name: "TDNDNS",
            dependencies: [
                "CLDNS", "CSocketIO", "ConfigFile", nioCore, nioPosix, logging,
                .product(name: "Atomics", package: "swift-atomics"),
            ]),
        .target(name: "GeoPolicy", dependencies: ["CMaxMindDB", "ConfigFile", logging]),
        .target(
            name: "HealthProbe",
            dependencies: ["ConfigFile", lifecycle, logging, httpClient, metrics, nioCore, nioPosix]
        ),
        .target(
            name: "Ledger",
            dependencies: [
                hummingbird, logging, .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]),
        .target(
            name: "TDNDaemon",
            dependencies: [
                "ConfigFile", "TDNDNS", "GeoPolicy", "HealthProbe", "Ledger", "CMemory", argumentParser, logging,
                lifecycle, .product(name: "UnixSignals", package: "swift-service-lifecycle"), hummingbird,
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"), metrics,
                .product(name: "Prometheus", package: "swift-prometheus"), httpClient,
            ]),
        .executableTarget(name: "tdnd", dependencies: ["TDNDaemon"]),

        // Pretend inference edges (vLLM-shaped /health, /metrics, /v1/models) for the probe
        // tests, the probe benchmark and the demo.
        .target(name: "FakeEdge", dependencies: [nioCore, nioPosix, nioHTTP1]),
        .executableTarget(name: "tdn-fake-edge", dependencies: ["FakeEdge", argumentParser]),
        .executableTarget(
            name: "tdn-ledger-bench", dependencies: ["Ledger", argumentParser, httpClient, nioFoundation]),
        .executableTarget(name: "tdn-probe-bench", dependencies: ["HealthProbe", argumentParser]),
        .target(name: "TDNTestSupport", dependencies: ["TDNDNS", "ConfigFile", "Ledger", nioHTTP1, nioCore, nioPosix]),

        // Each library's tests import it and the test support only; the daemon's tests its
        // wiring in process; IntegrationTests runs processes (tagged slow).
        .testTarget(
            name: "TDNDNSTests", dependencies: ["TDNDNS", "ConfigFile", "TDNTestSupport"], exclude: ["Resources"]),
        .testTarget(name: "ConfigFileTests", dependencies: ["ConfigFile"]),
        .testTarget(name: "GeoPolicyTests", dependencies: ["GeoPolicy", "ConfigFile", "TDNTestSupport"]),
        .testTarget(name: "HealthProbeTests", dependencies: ["HealthProbe", "FakeEdge", "TDNTestSupport", lifecycle]),
        .testTarget(
            name: "LedgerTests",
            dependencies: [
                "Ledger", "TDNTestSupport", hummingbird, .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"), nioHTTP1,
            ]),
        .testTarget(
            name: "TDNDaemonTests",
            dependencies: [
                "TDNDaemon", "TDNDNS", "GeoPolicy", "HealthProbe", "ConfigFile", "TDNTestSupport", "CAllocationCounter",
            ]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "tdnd", "TDNDaemon", "TDNDNS", "Ledger", "TDNTestSupport", "FakeEdge", httpClient, nioCore, nioHTTP1,
                nioFoundation,
            ]),
    ]
)
