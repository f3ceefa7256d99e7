"""What a build leaves behind: report.json and report.md (render), manifest.json, the mobile bundle, and the
publishing step that moves staged artifacts into place."""
