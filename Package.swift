// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "tdn-dns",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tdnd", targets: ["tdnd"]),
        .library(name: "TDNDNS", targets: ["TDNDNS"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
    ],
    targets: [
        // C libraries from Debian (see README: `make` installs them).
        .systemLibrary(
            name: "CLDNS", pkgConfig: "ldns", providers: [.apt(["libldns-dev"])]),
        .systemLibrary(
            name: "CMaxMindDB", pkgConfig: "libmaxminddb", providers: [.apt(["libmaxminddb-dev"])]),
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
                "CLDNS", "CSocketIO", "ConfigFile",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Atomics", package: "swift-atomics"),
            ]),
        .target(
            name: "GeoPolicy",
            dependencies: [
                "CMaxMindDB", "ConfigFile",
                .product(name: "Logging", package: "swift-log"),
            ]),
        .target(
            name: "HealthProbe",
            dependencies: [
                "ConfigFile",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        .target(
            name: "Ledger",
            dependencies: [
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]),
        .target(
            name: "TDNDaemon",
            dependencies: [
                "ConfigFile", "TDNDNS", "GeoPolicy", "HealthProbe", "Ledger", "CMemory",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ]),
        .executableTarget(name: "tdnd", dependencies: ["TDNDaemon"]),

        // Pretend inference edges (vLLM-shaped /health, /metrics, /v1/models) for the probe
        // tests, the probe benchmark and the demo.
        .target(
            name: "FakeEdge",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .executableTarget(
            name: "tdn-fake-edge",
            dependencies: ["FakeEdge", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .executableTarget(
            name: "tdn-ledger-bench",
            dependencies: [
                "Ledger",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ]),
        .executableTarget(
            name: "tdn-probe-bench",
            dependencies: ["HealthProbe", .product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .target(
            name: "TDNTestSupport",
            dependencies: [
                "TDNDNS", "ConfigFile", "Ledger",
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]),
        // Each library's tests import it and the test support only; the daemon's tests its
        // wiring in process; IntegrationTests runs processes (tagged slow).
        .testTarget(
            name: "TDNDNSTests", dependencies: ["TDNDNS", "ConfigFile", "TDNTestSupport"], exclude: ["Resources"]),
        .testTarget(name: "ConfigFileTests", dependencies: ["ConfigFile"]),
        .testTarget(name: "GeoPolicyTests", dependencies: ["GeoPolicy", "ConfigFile", "TDNTestSupport"]),
        .testTarget(
            name: "HealthProbeTests",
            dependencies: [
                "HealthProbe", "FakeEdge", .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .testTarget(
            name: "LedgerTests",
            dependencies: [
                "Ledger", "TDNTestSupport",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]),
        .testTarget(
            name: "TDNDaemonTests",
            dependencies: [
                "TDNDaemon", "TDNDNS", "GeoPolicy", "HealthProbe", "ConfigFile", "TDNTestSupport", "CAllocationCounter",
            ]),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "tdnd", "TDNDaemon", "TDNDNS", "Ledger", "TDNTestSupport", "FakeEdge",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
            ]),
    ]
)
