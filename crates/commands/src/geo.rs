//! Geo commands on sorted sets whose scores are Redis's 52-bit geohashes (26 steps of longitude
//! and latitude bits interleaved, latitude limited to ±85.05112878 as in Web Mercator): GEOADD,
//! GEOPOS, GEODIST, GEOHASH, GEOSEARCH, GEOSEARCHSTORE, GEORADIUS, GEORADIUSBYMEMBER and their
//! _RO forms. The search walks the same nine geohash boxes as Redis, so results (and their order
//! when no sort is asked for) are Redis's.

use std::ops::Bound;

use ferrite_protocol::args::parse_f64;
use ferrite_protocol::{Args, ErrorReply, ReplyWriter};
use ferrite_storage::{Slot, Value, ZSetRef, ZSetValue};

use crate::ctx::Ctx;
use crate::spec::flags::*;
use crate::spec::{CmdResult, CommandSpec, Creates, KEY1};
use crate::util::{as_zset, as_zset_mut};

crate::command_family!("geo");

const W: u32 = WRITE | DENYOOM;
const STORE_TOKENS: &[&str] = &["STORE", "STOREDIST"];

pub const COMMANDS: &[CommandSpec] = &[
    cmd(
        "geoadd",
        -5,
        W,
        KEY1,
        Creates::FirstKey,
        "Adds one or more members to a geospatial index. The key is created if it doesn't exist.",
        geoadd,
    ),
    cmd(
        "geopos",
        -2,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns the longitude and latitude of members from a geospatial index.",
        geopos,
    ),
    cmd(
        "geodist",
        -4,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns the distance between two members of a geospatial index.",
        geodist,
    ),
    cmd(
        "geohash",
        -2,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members from a geospatial index as geohash strings.",
        geohash,
    ),
    cmd(
        "geosearch",
        -7,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Queries a geospatial index for members inside an area of a box or a circle.",
        geosearch,
    ),
    cmd(
        "geosearchstore",
        -8,
        W,
        (1, 2, 1),
        Creates::FirstKey,
        "Queries a geospatial index for members inside an area of a box or a circle, optionally stores the result.",
        geosearchstore,
    ),
    cmd(
        "georadius",
        -6,
        W,
        KEY1,
        Creates::KeyAfter(STORE_TOKENS),
        "Queries a geospatial index for members within a distance from a coordinate, optionally stores the result.",
        georadius,
    ),
    cmd(
        "georadius_ro",
        -6,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members from a geospatial index that are within a distance from a coordinate.",
        georadius_ro,
    ),
    cmd(
        "georadiusbymember",
        -5,
        W,
        KEY1,
        Creates::KeyAfter(STORE_TOKENS),
        "Queries a geospatial index for members within a distance from a member, optionally stores the result.",
        georadiusbymember,
    ),
    cmd(
        "georadiusbymember_ro",
        -5,
        READONLY,
        KEY1,
        Creates::Nothing,
        "Returns members from a geospatial index that are within a distance from a member.",
        georadiusbymember_ro,
    ),
];

// ---------------------------------------------------------------------------------------------
// Geohash (Redis's geohash.c / geohash_helper.c)

const LAT_MIN: f64 = -85.051_128_78;
const LAT_MAX: f64 = 85.051_128_78;
const LONG_MIN: f64 = -180.0;
const LONG_MAX: f64 = 180.0;
const STEP_MAX: u8 = 26;
const EARTH_RADIUS_M: f64 = 6_372_797.560_856;
const MERCATOR_MAX: f64 = 20_037_726.37;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Range {
    min: f64,
    max: f64,
}

const LONG_RANGE: Range = Range {
    min: LONG_MIN,
    max: LONG_MAX,
};
const LAT_RANGE: Range = Range {
    min: LAT_MIN,
    max: LAT_MAX,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Hash {
    bits: u64,
    step: u8,
}

impl Hash {
    fn is_zero(self) -> bool {
        self.bits == 0 && self.step == 0
    }
}

#[derive(Debug, Clone, Copy)]
struct Area {
    lon: Range,
    lat: Range,
}

fn interleave64(xlo: u32, ylo: u32) -> u64 {
    const B: [u64; 5] = [
        0x5555_5555_5555_5555,
        0x3333_3333_3333_3333,
        0x0F0F_0F0F_0F0F_0F0F,
        0x00FF_00FF_00FF_00FF,
        0x0000_FFFF_0000_FFFF,
    ];
    const S: [u32; 5] = [1, 2, 4, 8, 16];
    let (mut x, mut y) = (u64::from(xlo), u64::from(ylo));
    for i in (0..5).rev() {
        x = (x | (x << S[i])) & B[i];
        y = (y | (y << S[i])) & B[i];
    }
    x | (y << 1)
}

fn deinterleave64(interleaved: u64) -> u64 {
    const B: [u64; 6] = [
        0x5555_5555_5555_5555,
        0x3333_3333_3333_3333,
        0x0F0F_0F0F_0F0F_0F0F,
        0x00FF_00FF_00FF_00FF,
        0x0000_FFFF_0000_FFFF,
        0x0000_0000_FFFF_FFFF,
    ];
    const S: [u32; 6] = [0, 1, 2, 4, 8, 16];
    let (mut x, mut y) = (interleaved, interleaved >> 1);
    for i in 0..6 {
        x = (x | (x >> S[i])) & B[i];
        y = (y | (y >> S[i])) & B[i];
    }
    x | (y << 32)
}

/// Encodes a point (already checked to lie within Redis's limits) at `step` bits per axis.
fn encode(lon_r: Range, lat_r: Range, lon: f64, lat: f64, step: u8) -> Hash {
    let lat_offset = (lat - lat_r.min) / (lat_r.max - lat_r.min) * (1u64 << step) as f64;
    let lon_offset = (lon - lon_r.min) / (lon_r.max - lon_r.min) * (1u64 << step) as f64;
    Hash {
        bits: interleave64(lat_offset as u32, lon_offset as u32),
        step,
    }
}

fn decode(lon_r: Range, lat_r: Range, h: Hash) -> Area {
    let sep = deinterleave64(h.bits);
    let (ilat, ilon) = (f64::from(sep as u32), f64::from((sep >> 32) as u32));
    let cells = (1u64 << h.step) as f64;
    let (lat_scale, lon_scale) = (lat_r.max - lat_r.min, lon_r.max - lon_r.min);
    Area {
        lat: Range {
            min: lat_r.min + (ilat / cells) * lat_scale,
            max: lat_r.min + ((ilat + 1.0) / cells) * lat_scale,
        },
        lon: Range {
            min: lon_r.min + (ilon / cells) * lon_scale,
            max: lon_r.min + ((ilon + 1.0) / cells) * lon_scale,
        },
    }
}

/// The centre of the cell a 52-bit score names, as (longitude, latitude).
fn score_to_lonlat(score: f64) -> (f64, f64) {
    let a = decode(
        LONG_RANGE,
        LAT_RANGE,
        Hash {
            bits: score as u64,
            step: STEP_MAX,
        },
    );
    let lon = ((a.lon.min + a.lon.max) / 2.0).clamp(LONG_MIN, LONG_MAX);
    let lat = ((a.lat.min + a.lat.max) / 2.0).clamp(LAT_MIN, LAT_MAX);
    (lon, lat)
}

fn lonlat_to_score(lon: f64, lat: f64) -> f64 {
    let h = encode(LONG_RANGE, LAT_RANGE, lon, lat, STEP_MAX);
    align52(h) as f64
}

fn align52(h: Hash) -> u64 {
    h.bits << (52 - u32::from(h.step) * 2)
}

fn move_x(h: &mut Hash, d: i8) {
    if d == 0 {
        return;
    }
    let shift = 64 - u32::from(h.step) * 2;
    let mut x = h.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let y = h.bits & 0x5555_5555_5555_5555;
    let zz = 0x5555_5555_5555_5555u64 >> shift;
    if d > 0 {
        x = x.wrapping_add(zz + 1);
    } else {
        x |= zz;
        x = x.wrapping_sub(zz + 1);
    }
    x &= 0xaaaa_aaaa_aaaa_aaaau64 >> shift;
    h.bits = x | y;
}

fn move_y(h: &mut Hash, d: i8) {
    if d == 0 {
        return;
    }
    let shift = 64 - u32::from(h.step) * 2;
    let x = h.bits & 0xaaaa_aaaa_aaaa_aaaa;
    let mut y = h.bits & 0x5555_5555_5555_5555;
    let zz = 0xaaaa_aaaa_aaaa_aaaau64 >> shift;
    if d > 0 {
        y = y.wrapping_add(zz + 1);
    } else {
        y |= zz;
        y = y.wrapping_sub(zz + 1);
    }
    y &= 0x5555_5555_5555_5555u64 >> shift;
    h.bits = x | y;
}

fn moved(h: Hash, dx: i8, dy: i8) -> Hash {
    let mut n = h;
    move_x(&mut n, dx);
    move_y(&mut n, dy);
    n
}

fn deg_rad(d: f64) -> f64 {
    d * (std::f64::consts::PI / 180.0)
}

fn rad_deg(r: f64) -> f64 {
    r / (std::f64::consts::PI / 180.0)
}

fn lat_distance(lat1: f64, lat2: f64) -> f64 {
    EARTH_RADIUS_M * (deg_rad(lat2) - deg_rad(lat1)).abs()
}

/// Haversine distance in metres.
fn distance(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (lon1r, lon2r) = (deg_rad(lon1), deg_rad(lon2));
    let v = ((lon2r - lon1r) / 2.0).sin();
    if v == 0.0 {
        return lat_distance(lat1, lat2);
    }
    let (lat1r, lat2r) = (deg_rad(lat1), deg_rad(lat2));
    let u = ((lat2r - lat1r) / 2.0).sin();
    let a = u * u + lat1r.cos() * lat2r.cos() * v * v;
    2.0 * EARTH_RADIUS_M * a.sqrt().asin()
}

fn estimate_steps(mut range_m: f64, lat: f64) -> u8 {
    if range_m == 0.0 {
        return 26;
    }
    let mut step: i32 = 1;
    while range_m < MERCATOR_MAX {
        range_m *= 2.0;
        step += 1;
    }
    step -= 2;
    if !(-66.0..=66.0).contains(&lat) {
        step -= 1;
        if !(-80.0..=80.0).contains(&lat) {
            step -= 1;
        }
    }
    step.clamp(1, 26) as u8
}

#[derive(Debug, Clone, Copy)]
enum ShapeKind {
    Radius(f64),
    Box { width: f64, height: f64 },
}

/// The area searched: centre (lon, lat), its kind in the request's unit, and metres per unit.
#[derive(Debug, Clone, Copy)]
struct Shape {
    lon: f64,
    lat: f64,
    kind: ShapeKind,
    conversion: f64,
}

impl Shape {
    /// [min_lon, min_lat, max_lon, max_lat] around the centre.
    fn bounds(&self) -> [f64; 4] {
        let (half_h, half_w) = match self.kind {
            ShapeKind::Radius(r) => (r, r),
            ShapeKind::Box { width, height } => (height / 2.0, width / 2.0),
        };
        let (height, width) = (half_h * self.conversion, half_w * self.conversion);
        let lat_delta = rad_deg(height / EARTH_RADIUS_M);
        let lon_delta_top = rad_deg(width / EARTH_RADIUS_M / deg_rad(self.lat + lat_delta).cos());
        let lon_delta_bottom =
            rad_deg(width / EARTH_RADIUS_M / deg_rad(self.lat - lat_delta).cos());
        let south = self.lat < 0.0;
        let lon_delta = if south {
            lon_delta_bottom
        } else {
            lon_delta_top
        };
        [
            self.lon - lon_delta,
            self.lat - lat_delta,
            self.lon + lon_delta,
            self.lat + lat_delta,
        ]
    }

    /// The centre box and its eight neighbours to scan (zero where not needed), in Redis's order.
    fn areas(&self) -> [Hash; 9] {
        let [min_lon, min_lat, max_lon, max_lat] = self.bounds();
        let radius_m = match self.kind {
            ShapeKind::Radius(r) => r,
            ShapeKind::Box { width, height } => {
                ((width / 2.0) * (width / 2.0) + (height / 2.0) * (height / 2.0)).sqrt()
            }
        } * self.conversion;
        let mut steps = estimate_steps(radius_m, self.lat);
        let mut hash = encode(LONG_RANGE, LAT_RANGE, self.lon, self.lat, steps);
        let mut area = decode(LONG_RANGE, LAT_RANGE, hash);
        // The boxes of this size may not reach the whole area: one step coarser then.
        let reach = |h: Hash| decode(LONG_RANGE, LAT_RANGE, h);
        let too_small = reach(moved(hash, 0, 1)).lat.max < max_lat
            || reach(moved(hash, 0, -1)).lat.min > min_lat
            || reach(moved(hash, 1, 0)).lon.max < max_lon
            || reach(moved(hash, -1, 0)).lon.min > min_lon;
        if steps > 1 && too_small {
            steps -= 1;
            hash = encode(LONG_RANGE, LAT_RANGE, self.lon, self.lat, steps);
            area = decode(LONG_RANGE, LAT_RANGE, hash);
        }
        let mut n = [
            hash,
            moved(hash, 0, 1),   // north
            moved(hash, 0, -1),  // south
            moved(hash, 1, 0),   // east
            moved(hash, -1, 0),  // west
            moved(hash, 1, 1),   // north-east
            moved(hash, -1, 1),  // north-west
            moved(hash, 1, -1),  // south-east
            moved(hash, -1, -1), // south-west
        ];
        // Neighbours the area cannot reach are not scanned.
        if steps >= 2 {
            let zero = Hash::default();
            if area.lat.min < min_lat {
                for i in [2, 8, 7] {
                    n[i] = zero;
                }
            }
            if area.lat.max > max_lat {
                for i in [1, 5, 6] {
                    n[i] = zero;
                }
            }
            if area.lon.min < min_lon {
                for i in [4, 8, 6] {
                    n[i] = zero;
                }
            }
            if area.lon.max > max_lon {
                for i in [3, 7, 5] {
                    n[i] = zero;
                }
            }
        }
        n
    }

    /// The distance in metres from the centre when (lon, lat) lies inside.
    fn contains(&self, lon: f64, lat: f64) -> Option<f64> {
        match self.kind {
            ShapeKind::Radius(r) => {
                let d = distance(self.lon, self.lat, lon, lat);
                (d <= r * self.conversion).then_some(d)
            }
            ShapeKind::Box { width, height } => {
                let (w, h) = (width * self.conversion, height * self.conversion);
                if lat_distance(lat, self.lat) > h / 2.0 {
                    return None;
                }
                if distance(lon, lat, self.lon, lat) > w / 2.0 {
                    return None;
                }
                Some(distance(self.lon, self.lat, lon, lat))
            }
        }
    }
}

struct Point {
    member: Box<[u8]>,
    score: f64,
    lon: f64,
    lat: f64,
    /// Metres, then the request's unit once results are chosen.
    dist: f64,
}

/// Members inside the shape, box by box (Redis's membersOfAllNeighbors); stops at `limit`.
fn search(z: ZSetRef<'_>, shape: &Shape, limit: usize) -> Vec<Point> {
    let areas = shape.areas();
    let mut found = Vec::new();
    let mut last: Option<usize> = None;
    for (i, &h) in areas.iter().enumerate() {
        if h.is_zero() {
            continue;
        }
        // With huge radii neighbours can repeat the previous box.
        if last.is_some_and(|l| areas[l] == h) {
            continue;
        }
        if limit > 0 && found.len() >= limit {
            break;
        }
        let min = align52(h) as f64;
        let max = align52(Hash {
            bits: h.bits + 1,
            step: h.step,
        }) as f64;
        for (m, score) in z.range_by_score(Bound::Included(min), Bound::Excluded(max)) {
            let (lon, lat) = score_to_lonlat(score);
            if let Some(dist) = shape.contains(lon, lat) {
                found.push(Point {
                    member: m.into(),
                    score,
                    lon,
                    lat,
                    dist,
                });
            }
            if limit > 0 && found.len() >= limit {
                break;
            }
        }
        last = Some(i);
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Argument parsing and replies

fn parse_lonlat(args: &Args<'_>, i: usize) -> Result<(f64, f64), ErrorReply> {
    let lon = args.float(i)?;
    let lat = args.float(i + 1)?;
    if !(LONG_MIN..=LONG_MAX).contains(&lon) || !(LAT_MIN..=LAT_MAX).contains(&lat) {
        return Err(ErrorReply::err(format!(
            "invalid longitude,latitude pair {lon:.6},{lat:.6}"
        )));
    }
    Ok((lon, lat))
}

/// Metres per unit.
fn parse_unit(arg: &[u8]) -> Result<f64, ErrorReply> {
    match arg.to_ascii_lowercase().as_slice() {
        b"m" => Ok(1.0),
        b"km" => Ok(1000.0),
        b"ft" => Ok(0.3048),
        b"mi" => Ok(1609.34),
        _ => Err(ErrorReply::err(
            "unsupported unit provided. please use M, KM, FT, MI",
        )),
    }
}

fn parse_radius(args: &Args<'_>, i: usize) -> Result<(f64, f64), ErrorReply> {
    let r = parse_f64(args.get(i)).ok_or_else(|| ErrorReply::err("need numeric radius"))?;
    if r < 0.0 {
        return Err(ErrorReply::err("radius cannot be negative"));
    }
    Ok((r, parse_unit(args.get(i + 1))?))
}

/// A distance as Redis prints it: rounded to 4 decimals (llrint of d·10⁴).
fn format_distance(d: f64) -> String {
    if d == 0.0 {
        return "0.0000".into();
    }
    let v = (d * 10000.0).round_ties_even() as i64;
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:04}", a / 10000, a % 10000)
}

/// A coordinate as Redis prints it (`%.17Lf` without trailing zeros); a double in RESP3.
fn reply_coord(w: &mut ReplyWriter<'_>, v: f64) {
    let mut s = format!("{v:.17}");
    if s.contains('.') {
        let trimmed = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(trimmed);
    }
    if s == "-0" {
        s = "0".into();
    }
    if w.is_resp3() {
        w.raw(format!(",{s}\r\n").as_bytes());
    } else {
        w.bulk(s.as_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Commands

fn geoadd(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let (mut nx, mut xx, mut ch) = (false, false, false);
    let mut i = 2;
    while i < args.len() {
        match args.get(i).to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"CH" => ch = true,
            _ => break,
        }
        i += 1;
    }
    if !(args.len() - i).is_multiple_of(3) || (nx && xx) || i == args.len() {
        return Err(ErrorReply::syntax());
    }
    let mut points = Vec::with_capacity((args.len() - i) / 3);
    for j in (i..args.len()).step_by(3) {
        let (lon, lat) = parse_lonlat(&args, j)?;
        points.push((lonlat_to_score(lon, lat), args.get(j + 2)));
    }
    let apply = |z: &mut ZSetValue| {
        let (mut added, mut changed) = (0i64, 0i64);
        for &(score, m) in &points {
            match z.score(m) {
                Some(old) if !nx && old != score => {
                    z.insert(m, score);
                    changed += 1;
                }
                None if !xx => {
                    z.insert(m, score);
                    added += 1;
                }
                _ => {}
            }
        }
        added + if ch { changed } else { 0 }
    };
    let n = match ctx.db.entry(args.get(1), ctx.now) {
        Slot::Occupied(mut o) => apply(as_zset_mut(o.get_mut())?),
        Slot::Vacant(v) => {
            let mut z = ZSetValue::default();
            let n = apply(&mut z);
            v.insert(Value::ZSet(z), None);
            n
        }
    };
    ctx.w.int(n);
    Ok(())
}

fn read_zset<'d>(ctx: &'d mut Ctx<'_, '_>, key: &[u8]) -> Result<Option<ZSetRef<'d>>, ErrorReply> {
    match ctx.db.get(key, ctx.now) {
        Some(e) => Ok(Some(as_zset(e)?)),
        None => Ok(None),
    }
}

fn geopos(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let z = read_zset(ctx, args.get(1))?;
    let scores: Vec<Option<f64>> = args
        .tail(2)
        .iter()
        .map(|m| z.and_then(|z| z.score(m)))
        .collect();
    ctx.w.array(scores.len());
    for s in scores {
        match s {
            Some(score) => {
                let (lon, lat) = score_to_lonlat(score);
                ctx.w.array(2);
                reply_coord(ctx.w, lon);
                reply_coord(ctx.w, lat);
            }
            None => ctx.w.null_array(),
        }
    }
    Ok(())
}

fn geodist(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let to_meter = match args.len() {
        4 => 1.0,
        5 => parse_unit(args.get(4))?,
        _ => return Err(ErrorReply::syntax()),
    };
    let Some(z) = read_zset(ctx, args.get(1))? else {
        ctx.w.null();
        return Ok(());
    };
    match (z.score(args.get(2)), z.score(args.get(3))) {
        (Some(a), Some(b)) => {
            let (lon1, lat1) = score_to_lonlat(a);
            let (lon2, lat2) = score_to_lonlat(b);
            let d = distance(lon1, lat1, lon2, lat2) / to_meter;
            ctx.w.bulk(format_distance(d).as_bytes());
        }
        _ => ctx.w.null(),
    }
    Ok(())
}

fn geohash(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    const ALPHABET: &[u8; 32] = b"0123456789bcdefghjkmnpqrstuvwxyz";
    let z = read_zset(ctx, args.get(1))?;
    let scores: Vec<Option<f64>> = args
        .tail(2)
        .iter()
        .map(|m| z.and_then(|z| z.score(m)))
        .collect();
    ctx.w.array(scores.len());
    for s in scores {
        let Some(score) = s else {
            ctx.w.null();
            continue;
        };
        // Scores use latitudes within ±85.05; standard geohashes use ±90: decode and re-encode.
        let (lon, lat) = score_to_lonlat(score);
        let h = encode(
            LONG_RANGE,
            Range {
                min: -90.0,
                max: 90.0,
            },
            lon,
            lat,
            26,
        );
        let mut buf = [0u8; 11];
        for (i, c) in buf.iter_mut().enumerate() {
            let idx = if i == 10 {
                0
            } else {
                (h.bits >> (52 - (i + 1) * 5)) & 0x1f
            };
            *c = ALPHABET[idx as usize];
        }
        ctx.w.bulk(&buf);
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// GEORADIUS: centre given as longitude latitude.
    Radius,
    /// GEORADIUSBYMEMBER: centre given as a member.
    ByMember,
    Search,
    SearchStore,
}

#[derive(Clone, Copy, PartialEq)]
enum Sort {
    None,
    Asc,
    Desc,
}

fn georadius_generic(
    ctx: &mut Ctx<'_, '_>,
    args: Args<'_>,
    variant: Variant,
    no_store: bool,
) -> CmdResult {
    let src_at = if variant == Variant::SearchStore {
        2
    } else {
        1
    };
    let now = ctx.now;
    // The source is read (and type-checked) first, as in Redis.
    let exists = match ctx.db.get(args.get(src_at), now) {
        Some(e) => {
            as_zset(e)?;
            true
        }
        None => false,
    };
    let member_centre = |ctx: &mut Ctx<'_, '_>, m: &[u8]| -> Result<(f64, f64), ErrorReply> {
        let score = read_zset(ctx, args.get(src_at))?.and_then(|z| z.score(m));
        score
            .map(score_to_lonlat)
            .ok_or_else(|| ErrorReply::err("could not decode requested zset member"))
    };
    let mut centre: Option<(f64, f64)> = None;
    let mut kind: Option<(ShapeKind, f64)> = None;
    let base = match variant {
        Variant::Radius => {
            centre = Some(parse_lonlat(&args, 2)?);
            let (r, conv) = parse_radius(&args, 4)?;
            kind = Some((ShapeKind::Radius(r), conv));
            6
        }
        Variant::ByMember => {
            if exists {
                centre = Some(member_centre(ctx, args.get(2))?);
                let (r, conv) = parse_radius(&args, 3)?;
                kind = Some((ShapeKind::Radius(r), conv));
            }
            5
        }
        Variant::Search => 2,
        Variant::SearchStore => 3,
    };
    let is_search = matches!(variant, Variant::Search | Variant::SearchStore);
    let (mut withdist, mut withhash, mut withcoord, mut any) = (false, false, false, false);
    let (mut frommember, mut fromloc, mut byradius, mut bybox) = (false, false, false, false);
    let mut sort = Sort::None;
    let mut count: i64 = 0;
    let mut store: Option<&[u8]> = (variant == Variant::SearchStore).then(|| args.get(1));
    let mut storedist = false;
    let mut i = base;
    while i < args.len() {
        let left = args.len() - i - 1;
        let word = args.get(i).to_ascii_uppercase();
        match word.as_slice() {
            b"WITHDIST" => withdist = true,
            b"WITHHASH" => withhash = true,
            b"WITHCOORD" => withcoord = true,
            b"ANY" => any = true,
            b"ASC" => sort = Sort::Asc,
            b"DESC" => sort = Sort::Desc,
            b"COUNT" if left >= 1 => {
                count = args.int(i + 1)?;
                if count <= 0 {
                    return Err(ErrorReply::err("COUNT must be > 0"));
                }
                i += 1;
            }
            b"STORE" | b"STOREDIST" if left >= 1 && !no_store && !is_search => {
                store = Some(args.get(i + 1));
                storedist = word.as_slice() == b"STOREDIST";
                i += 1;
            }
            b"STOREDIST" if variant == Variant::SearchStore => storedist = true,
            b"FROMMEMBER" if left >= 1 && is_search && !fromloc => {
                if exists {
                    centre = Some(member_centre(ctx, args.get(i + 1))?);
                }
                frommember = true;
                i += 1;
            }
            b"FROMLONLAT" if left >= 2 && is_search && !frommember => {
                centre = Some(parse_lonlat(&args, i + 1)?);
                fromloc = true;
                i += 2;
            }
            b"BYRADIUS" if left >= 2 && is_search && !bybox => {
                let (r, conv) = parse_radius(&args, i + 1)?;
                kind = Some((ShapeKind::Radius(r), conv));
                byradius = true;
                i += 2;
            }
            b"BYBOX" if left >= 3 && is_search && !byradius => {
                let w = parse_f64(args.get(i + 1))
                    .ok_or_else(|| ErrorReply::err("need numeric width"))?;
                let h = parse_f64(args.get(i + 2))
                    .ok_or_else(|| ErrorReply::err("need numeric height"))?;
                if w < 0.0 || h < 0.0 {
                    return Err(ErrorReply::err("height or width cannot be negative"));
                }
                let conv = parse_unit(args.get(i + 3))?;
                kind = Some((
                    ShapeKind::Box {
                        width: w,
                        height: h,
                    },
                    conv,
                ));
                bybox = true;
                i += 3;
            }
            _ => return Err(ErrorReply::syntax()),
        }
        i += 1;
    }
    if store.is_some() && (withdist || withhash || withcoord) {
        return Err(ErrorReply::err(format!(
            "{} is not compatible with WITHDIST, WITHHASH and WITHCOORD options",
            if variant == Variant::SearchStore {
                "GEOSEARCHSTORE"
            } else {
                "STORE option in GEORADIUS"
            }
        )));
    }
    let name = args.text(0);
    if is_search && !(frommember || fromloc) {
        return Err(ErrorReply::err(format!(
            "exactly one of FROMMEMBER or FROMLONLAT can be specified for {name}"
        )));
    }
    if is_search && !(byradius || bybox) {
        return Err(ErrorReply::err(format!(
            "exactly one of BYRADIUS and BYBOX can be specified for {name}"
        )));
    }
    if any && count == 0 {
        return Err(ErrorReply::err("the ANY argument requires COUNT argument"));
    }
    let (Some((lon, lat)), Some((kind, conversion)), true) = (centre, kind, exists) else {
        // No source: an empty answer (and the destination deleted).
        match store {
            Some(dst) => {
                if let Some(old) = ctx.db.remove(dst, now) {
                    ctx.garbage.defer(old.value().elements(), old);
                }
                ctx.w.int(0);
            }
            None => ctx.w.array(0),
        }
        return Ok(());
    };
    if count != 0 && sort == Sort::None && !any {
        sort = Sort::Asc;
    }
    let shape = Shape {
        lon,
        lat,
        kind,
        conversion,
    };
    let limit = if any { count as usize } else { 0 };
    let mut points = match read_zset(ctx, args.get(src_at))? {
        Some(z) => search(z, &shape, limit),
        None => Vec::new(),
    };
    match sort {
        Sort::Asc => points.sort_by(|a, b| a.dist.total_cmp(&b.dist)),
        Sort::Desc => points.sort_by(|a, b| b.dist.total_cmp(&a.dist)),
        Sort::None => {}
    }
    if count > 0 {
        points.truncate(usize::try_from(count).unwrap_or(usize::MAX));
    }
    for p in &mut points {
        p.dist /= conversion;
    }
    let Some(dst) = store else {
        let options = usize::from(withdist) + usize::from(withhash) + usize::from(withcoord);
        let w = &mut *ctx.w;
        w.array(points.len());
        for p in &points {
            if options > 0 {
                w.array(options + 1);
            }
            w.bulk(&p.member);
            if withdist {
                w.bulk(format_distance(p.dist).as_bytes());
            }
            if withhash {
                w.int(p.score as i64);
            }
            if withcoord {
                w.array(2);
                reply_coord(w, p.lon);
                reply_coord(w, p.lat);
            }
        }
        return Ok(());
    };
    let n = points.len();
    if n == 0 {
        if let Some(old) = ctx.db.remove(dst, now) {
            ctx.garbage.defer(old.value().elements(), old);
        }
    } else {
        let mut z = ZSetValue::default();
        for p in &points {
            z.insert(&p.member, if storedist { p.dist } else { p.score });
        }
        let value = Value::ZSet(z);
        match ctx.db.entry(dst, now) {
            Slot::Occupied(mut o) => {
                let old = o.swap_value(value);
                o.get_mut().set_expire_at(None);
                ctx.garbage.defer(old.elements(), old);
            }
            Slot::Vacant(v) => v.insert(value, None),
        }
    }
    ctx.w.int(n as i64);
    Ok(())
}

fn geosearch(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    georadius_generic(ctx, args, Variant::Search, true)
}

fn geosearchstore(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    georadius_generic(ctx, args, Variant::SearchStore, false)
}

fn georadius(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    georadius_generic(ctx, args, Variant::Radius, false)
}

fn georadius_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    georadius_generic(ctx, args, Variant::Radius, true)
}

fn georadiusbymember(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    georadius_generic(ctx, args, Variant::ByMember, false)
}

fn georadiusbymember_ro(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    georadius_generic(ctx, args, Variant::ByMember, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    fn sicily() -> TestDb {
        let mut t = TestDb::new();
        t.check(&[(
            &[
                "GEOADD",
                "Sicily",
                "13.361389",
                "38.115556",
                "Palermo",
                "15.087269",
                "37.502669",
                "Catania",
            ],
            ":2\r\n",
        )]);
        t
    }

    #[test]
    fn scores_are_redis_geohashes() {
        // ZSCORE Sicily Palermo on redis-server: 3479099956230698.
        assert_eq!(lonlat_to_score(13.361389, 38.115556), 3479099956230698.0);
        assert_eq!(lonlat_to_score(15.087269, 37.502669), 3479447370796909.0);
        assert_eq!(format_distance(166274.15156960033), "166274.1516");
        assert_eq!(format_distance(0.0), "0.0000");
    }

    #[test]
    fn documented_examples() {
        let mut t = sicily();
        t.check(&[
            (&["GEODIST", "Sicily", "Palermo", "Catania"], "$11\r\n166274.1516\r\n"),
            (&["GEODIST", "Sicily", "Palermo", "Catania", "km"], "$8\r\n166.2742\r\n"),
            (&["GEODIST", "Sicily", "Palermo", "Catania", "mi"], "$8\r\n103.3182\r\n"),
            (&["GEODIST", "Sicily", "Foo", "Bar"], "$-1\r\n"),
            (
                &["GEOHASH", "Sicily", "Palermo", "Catania", "nope"],
                "*3\r\n$11\r\nsqc8b49rny0\r\n$11\r\nsqdtr74hyu0\r\n$-1\r\n",
            ),
            (
                &["GEOPOS", "Sicily", "Palermo", "NonExisting"],
                "*2\r\n*2\r\n$20\r\n13.36138933897018433\r\n$20\r\n38.11555639549629859\r\n*-1\r\n",
            ),
            (
                &["GEORADIUS", "Sicily", "15", "37", "200", "km", "WITHDIST", "ASC"],
                "*2\r\n*2\r\n$7\r\nCatania\r\n$7\r\n56.4413\r\n*2\r\n$7\r\nPalermo\r\n$8\r\n190.4424\r\n",
            ),
            (
                &["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYBOX", "400", "400", "km", "ASC", "WITHHASH"],
                "*2\r\n*2\r\n$7\r\nCatania\r\n:3479447370796909\r\n*2\r\n$7\r\nPalermo\r\n:3479099956230698\r\n",
            ),
            (
                &["GEORADIUSBYMEMBER", "Sicily", "Palermo", "100", "km"],
                "*1\r\n$7\r\nPalermo\r\n",
            ),
            (
                &["GEOSEARCHSTORE", "dst", "Sicily", "FROMMEMBER", "Palermo", "BYRADIUS", "500", "km", "STOREDIST"],
                ":2\r\n",
            ),
            (&["ZSCORE", "dst", "Palermo"], "$1\r\n0\r\n"),
            (
                &["GEORADIUS", "Sicily", "15", "37", "200", "km", "STORE", "st"],
                ":2\r\n",
            ),
            (&["ZCARD", "st"], ":2\r\n"),
            (
                &["GEORADIUS_RO", "Sicily", "15", "37", "200", "km", "STORE", "st"],
                "-ERR syntax error\r\n",
            ),
            (
                &["GEOADD", "Sicily", "200", "100", "x"],
                "-ERR invalid longitude,latitude pair 200.000000,100.000000\r\n",
            ),
            (&["GEOADD", "Sicily", "NX", "XX", "1", "2", "x"], "-ERR syntax error\r\n"),
            (&["GEOADD", "Sicily", "XX", "CH", "13.361389", "38.115556", "Palermo"], ":0\r\n"),
            (
                &["GEOSEARCH", "Sicily", "BYRADIUS", "10", "km", "ASC", "WITHDIST"],
                "-ERR exactly one of FROMMEMBER or FROMLONLAT can be specified for GEOSEARCH\r\n",
            ),
            (
                &["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "10", "parsec"],
                "-ERR unsupported unit provided. please use M, KM, FT, MI\r\n",
            ),
            (
                &["GEOSEARCH", "Sicily", "FROMMEMBER", "nope", "BYRADIUS", "10", "km"],
                "-ERR could not decode requested zset member\r\n",
            ),
            (
                &["GEOSEARCH", "Sicily", "FROMLONLAT", "15", "37", "BYRADIUS", "10", "km", "ANY"],
                "-ERR the ANY argument requires COUNT argument\r\n",
            ),
            (
                &["GEOSEARCH", "none", "FROMMEMBER", "nope", "BYRADIUS", "10", "km"],
                "*0\r\n",
            ),
            (
                &["GEORADIUS", "Sicily", "15", "37", "200", "km", "COUNT", "1"],
                "*1\r\n$7\r\nCatania\r\n",
            ),
        ]);
        t.assert_digest_consistent();
    }

    #[test]
    fn resp3_coordinates_are_doubles() {
        let mut t = sicily();
        t.proto = ferrite_protocol::Protocol::Resp3;
        t.check(&[(
            &["GEOPOS", "Sicily", "Palermo"],
            "*1\r\n*2\r\n,13.36138933897018433\r\n,38.11555639549629859\r\n",
        )]);
    }

    #[test]
    fn geohash_round_trip_stays_in_the_cell() {
        for (lon, lat) in [(0.0, 0.0), (-179.9, -85.0), (179.9, 85.0), (2.35, 48.85)] {
            let (lon2, lat2) = score_to_lonlat(lonlat_to_score(lon, lat));
            assert!((lon - lon2).abs() < 1e-5 && (lat - lat2).abs() < 1e-5);
        }
    }
}
