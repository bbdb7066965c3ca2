"""Evidence for reports (Allure attachments) and living documentation."""
