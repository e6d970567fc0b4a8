"""A few Sage users-table rows and the template filled the way the reference's embedding script fills it (docs/profiles.md, "The encoding recipe")."""
from __future__ import annotations

import csv
import io

TEMPLATE = ("Age <<AGE>> (<<AGE_GROUP>>), <<GENDER>>, religion <<RELIGION>>, mental <<MENTAL>>, physical "
            "<<PHYSICAL>>.\nForbidden: <<BANNED>>\nAllowed: <<ALLOWED>>\n")
# Rows 1, 2, 3 (religion None), 7 (infant, nothing allowed) and 41 (nothing forbidden) of sage_users.csv.
SAGE_ROWS = '''Age,Age_Group,Gender,Religion,Physical_Condition,Mental_Condition,Banned_Categories,Allowed_Categories
18,adolescents,male,Islam,healthy,healthy,"['Propaganda', 'Sexuality']","['Harassment', 'Hate', 'Self-Harm', 'Shocking', 'Violence']"
20,young adults,male,Christianity,healthy,depression,"['Propaganda', 'Self-Harm', 'Sexuality', 'Shocking']","['Harassment', 'Hate', 'Violence']"
18,adolescents,male,None,hearing impairment,anxiety,"['Self-Harm', 'Sexuality', 'Shocking']","['Harassment', 'Hate', 'Propaganda', 'Violence']"
2,infants & toddlers,male,None,intellectual disability,healthy,"['Harassment', 'Hate', 'Propaganda', 'Self-Harm', 'Sexuality', 'Shocking', 'Violence']",[]
44,middle-aged,male,None,hearing impairment,healthy,[],"['Harassment', 'Hate', 'Propaganda', 'Self-Harm', 'Sexuality', 'Shocking', 'Violence']"
'''


def sage_rows(text: str = SAGE_ROWS) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def table_filled(template: str, row: dict) -> str:
    """The template with the table's own strings put in (religion None → 'nan', as the published run read it)."""
    religion = "nan" if row["Religion"] == "None" else row["Religion"]
    return (template.replace("<<AGE>>", row["Age"]).replace("<<AGE_GROUP>>", row["Age_Group"])
            .replace("<<GENDER>>", row["Gender"]).replace("<<RELIGION>>", religion)
            .replace("<<MENTAL>>", row["Mental_Condition"]).replace("<<PHYSICAL>>", row["Physical_Condition"])
            .replace("<<BANNED>>", row["Banned_Categories"]).replace("<<ALLOWED>>", row["Allowed_Categories"]))
