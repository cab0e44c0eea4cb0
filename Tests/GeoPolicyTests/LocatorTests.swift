import ConfigFile
import GeoPolicy
import Testing

@Suite("Locator", .cpuBound)
struct LocatorTests {
    static let networks = [
        "5.9.0.0/16,DE", "8.8.8.0/24,US", "133.1.0.0/16,JP", "2a01:4f8::/32,DE", "2001:4860::/32,US",
    ]

    func locator() throws -> Locator {
        let geo = try GeoDatabase(path: try Fixtures.database(Self.networks))
        return Locator(policy: try Fixtures.loadPolicy(), geo: geo)
    }

    @Test(arguments: [
        ("5.9.1.1", "DE", "geo database network 5.9.0.0/16", 16),
        ("8.8.8.8", "US", "geo database network 8.8.8.0/24", 24),
        ("2a01:4f8:1::1", "DE", "geo database network 2a01:4f8::/32", 32),
        // IPv4-mapped and NAT64 spellings locate as the IPv4 address they carry.
        ("::ffff:8.8.8.8", "US", "geo database network 8.8.8.0/24", 24),
        ("64:ff9b::808:808", "US", "geo database network 8.8.8.0/24", 24),
        // An operator network inside a database network wins, with its own prefix.
        ("5.9.200.1", "FR", "operator network metro-paris (5.9.128.0/17)", 17),
        ("10.1.2.3", "DE", "operator network lab (10.0.0.0/8)", 8),
    ])
    func locates(_ address: String, _ country: String, _ source: String, _ prefix: Int) throws {
        let result = try locator().locate(IPPrefix.parseAddress(address)!)
        #expect(result.location.country == country)
        #expect(result.source == source)
        #expect(result.prefix?.length == prefix)
    }

    @Test func unknownAddressesAreNotLocated() throws {
        let result = try locator().locate(IPPrefix.parseAddress("192.0.2.1")!)
        #expect(result.location == .unknown)
    }

    @Test func coordinatesAndContinentComeFromTheDatabase() throws {
        let result = try locator().locate(IPPrefix.parseAddress("133.1.2.3")!)
        #expect(result.location.continent == "AS")
        #expect(result.location.coordinates == Coordinates(latitude: 36.0, longitude: 138.5))
    }

    @Test func enumerationCoversEveryNetworkOnce() throws {
        let geo = try GeoDatabase(path: try Fixtures.database(Self.networks))
        var v4: [(UInt32, UInt8, Int32)] = []
        var v6: [(UInt64, UInt64, UInt8, Int32)] = []
        var seen: [Location] = []
        geo.networks(
            { location in
                seen.append(location ?? .unknown)
                return Int32(seen.count)
            }, v4: &v4, v6: &v6)
        #expect(v4.map { "\($0.0 >> 24).\(($0.0 >> 16) & 0xFF)/\($0.1)" }.sorted() == ["133.1/16", "5.9/16", "8.8/24"])
        #expect(v6.count == 2 && v6.allSatisfy { $0.2 == 32 })
    }

    @Test func rejectsWhatIsNotAGeoDatabase() throws {
        let path = try Fixtures.database(Self.networks) + ".bad"
        try "not a database".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ConfigErrors.self) { try GeoDatabase(path: path) }
        #expect(throws: ConfigErrors.self) { try GeoDatabase(path: "/nonexistent.mmdb") }
    }
}
