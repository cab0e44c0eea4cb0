/// The smallest valid policy: one site, one model. Policy tests change a line of it to make
/// each error they check.
public enum PolicyFixture {
    public static let minimal = """
        zone: t.example
        jurisdictions: {eu: [DE]}
        sites:
          fra: {tier: edge, location: {lat: 50, lon: 8, country: DE}, jurisdiction: eu, ipv4: [192.0.2.1]}
        models:
          m: {size: 7b}

        """
}
