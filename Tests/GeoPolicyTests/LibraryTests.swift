import GeoPolicy
import Testing

@Suite struct LibraryTests {
    @Test func linksLibMaxMindDB() {
        let parts = GeoPolicy.maxMindLibraryVersion.split(separator: ".")
        #expect(parts.count >= 2 && parts.allSatisfy { Int($0) != nil })
    }
}
