import ConfigFile
import Testing

@Suite("Config reader")
struct ConfigReaderTests {
    static let text = """
        name: demo
        count: 12
        ratio: 0.5
        list: [a, b]
        nothing:
        nested: {deep: {x: 1}}
        """

    @Test func typedAccessorsReadAndRangeCheck() throws {
        let root = try #require(try ConfigReader.parse(Self.text, file: "c.yaml").get())
        var reader = ConfigReader(file: "c.yaml")
        let top = reader.entries(root, "", known: ["name", "count", "ratio", "list", "nothing", "nested"])
        #expect(top.entries.map(\.key) == ["name", "count", "ratio", "list", "nothing", "nested"], "file order")
        #expect(reader.string(top["name"], "name") == "demo")
        #expect(reader.integer(top["count"], "count", 0...100) == 12)
        #expect(reader.number(top["ratio"], "ratio", 0...1) == 0.5)
        #expect(reader.number(top["count"], "count", 0...100) == 12, "a whole number is a number")
        #expect(reader.strings(top["list"], "list") == ["a", "b"])
        #expect(top["nothing"]?.isNull == true)
        #expect(reader.errors.isEmpty)

        #expect(reader.integer(top["count"], "count", 0...10) == nil)
        #expect(reader.integer(top["ratio"], "ratio", 0...10) == nil)
        #expect(reader.string(top["nothing"], "nothing") == nil)
        let deep = reader.entries(try #require(top["nested"]), "nested", known: ["other"])
        #expect(deep.isEmpty)
        #expect(
            reader.errors.map(\.description) == [
                "c.yaml:2: count: expected a whole number from 0 to 10",
                "c.yaml:3: ratio: expected a whole number from 0 to 10",
                "c.yaml:5: nothing: expected text",
                "c.yaml:6: nested: unknown key 'deep'",
            ])
        #expect(reader.errors[0].column == 8 && reader.errors[0].key == "count")
    }

    @Test func unknownKeysAndSyntaxErrorsNameTheirLine() {
        guard case .failure(let failure) = ConfigReader.parse("a: [1, 2\nb: 3\n", file: "bad.yaml") else {
            Issue.record("a syntax error parsed")
            return
        }
        #expect(failure.errors.count == 1 && failure.errors[0].description.hasPrefix("bad.yaml:"))
        #expect(failure.errors[0].line > 0)
        guard case .failure(let missing) = ConfigReader.load(path: "/nonexistent/x.yaml", what: "the policy file")
        else {
            Issue.record("a missing file loaded")
            return
        }
        #expect(missing.description == "/nonexistent/x.yaml: cannot read the policy file")
    }

    @Test func oneLoadReportsEachProblemOnce() {
        let error = ConfigError(file: "p.yaml", line: 3, key: "probe-defaults.all", message: "timeout is longer")
        let other = ConfigError(file: "p.yaml", line: 0, message: "cannot read")
        let errors = ConfigErrors([error, other, error])
        #expect(errors.errors == [error, other])
        #expect(errors.description == "p.yaml:3: probe-defaults.all: timeout is longer\np.yaml: cannot read")
    }
}
