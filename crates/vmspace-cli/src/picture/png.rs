//! Writing pictures: SVG as is, PNG rendered from the SVG with resvg.
//!
//! Text needs fonts: the system's, found through fontdb (`.ci/run` installs
//! fonts-dejavu-core). Without any font the PNG is still written, without text, and a warning
//! says so on stderr.

use resvg::{tiny_skia, usvg};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// The system fonts, loaded once, with the generic families pointed at DejaVu when present.
fn fonts() -> Arc<usvg::fontdb::Database> {
    static DB: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    DB.get_or_init(|| {
        let mut db = usvg::fontdb::Database::new();
        db.load_system_fonts();
        let has = |db: &usvg::fontdb::Database, name: &str| {
            db.faces()
                .any(|f| f.families.iter().any(|(n, _)| n == name))
        };
        if has(&db, "DejaVu Sans Mono") {
            db.set_monospace_family("DejaVu Sans Mono");
        }
        if has(&db, "DejaVu Sans") {
            db.set_sans_serif_family("DejaVu Sans");
        }
        if db.is_empty() {
            eprintln!(
                "vmspace: warning: no system fonts found, PNG text is left out \
                 (install a font package such as fonts-dejavu-core)"
            );
        }
        Arc::new(db)
    })
    .clone()
}

/// Renders an SVG document to PNG bytes at its own size (1 px per SVG unit), on white.
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>, String> {
    let opt = usvg::Options {
        fontdb: fonts(),
        ..usvg::Options::default()
    };
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| format!("bad SVG: {e}"))?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| format!("cannot allocate a {}x{} image", size.width(), size.height()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::identity(),
        &mut pixmap.as_mut(),
    );
    pixmap
        .encode_png()
        .map_err(|e| format!("PNG encoding: {e}"))
}

/// Writes a picture: `.svg` as is, `.png` rendered; any other extension is an error.
pub fn write_picture(path: &Path, svg: &str) -> Result<(), String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let bytes = match ext.as_deref() {
        Some("svg") => svg.as_bytes().to_vec(),
        Some("png") => svg_to_png(svg).map_err(|e| format!("{}: {e}", path.display()))?,
        other => {
            return Err(format!(
                "{}: unknown picture format {} (use a .svg or .png file name)",
                path.display(),
                other.map_or("(no extension)".to_string(), |e| format!(".{e}"))
            ))
        }
    };
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::{render_chart, render_space, Band, BandKind, Chart, Series, SpacePicture};
    use super::*;

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(b: &[u8]) -> (u32, u32) {
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&b[12..16], b"IHDR");
        let be = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        (be(16), be(20))
    }

    /// The SVG root's width and height attributes.
    fn svg_size(svg: &str) -> (u32, u32) {
        let doc = roxmltree::Document::parse(svg).unwrap();
        let r = doc.root_element();
        let n = |a| r.attribute(a).unwrap().parse::<f64>().unwrap() as u32;
        (n("width"), n("height"))
    }

    #[test]
    fn png_has_the_signature_and_the_svg_size() {
        let dir = std::env::temp_dir().join(format!("vmspace-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let space = render_space(&SpacePicture {
            title: "png".into(),
            bits: 32,
            bands: vec![Band {
                start: 0x1000,
                end: 0x8000_0000,
                kind: BandKind::Heap,
                label: "heap".into(),
            }],
        });
        let chart = render_chart(&Chart {
            title: "c".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            series: vec![Series {
                name: "s".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            }],
        });
        for (name, svg) in [("space.png", &space), ("chart.PNG", &chart)] {
            let p = dir.join(name);
            write_picture(&p, svg).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(png_size(&bytes), svg_size(svg));
            // Not a blank image: the bands and lines left non-white pixels.
            assert!(bytes.len() > 2000, "{} bytes", bytes.len());
        }
        let p = dir.join("space.svg");
        write_picture(&p, &space).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), space);
        let e = write_picture(&dir.join("space.jpg"), &space).unwrap_err();
        assert!(e.contains("unknown picture format .jpg"), "{e}");
        let e = write_picture(&dir.join("no/such/dir/x.svg"), &space).unwrap_err();
        assert!(e.contains("no/such/dir/x.svg"), "{e}");
        assert!(svg_to_png("<svg").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
