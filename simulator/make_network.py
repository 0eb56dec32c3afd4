"""Writes config/facilities/us_network.csv from the table of real US cities below; deterministic.

Run `python -m simulator.make_network` after editing the tables and commit the CSV with them.
Coordinates are the cities' (or, for hubs, the airports') real ones; several facilities in one metro
are spread on a small deterministic spiral within a land-side sector, so none lands in a lake or bay.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import zlib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "config" / "facilities" / "us_network.csv"
COLUMNS = ("facility_id", "name", "address", "city", "state", "zip", "lat", "lng", "type", "region")

# fmt: off
CENSUS_REGION: dict[str, str] = {
    **dict.fromkeys(("CT", "ME", "MA", "NH", "RI", "VT", "NJ", "NY", "PA"), "Northeast"),
    **dict.fromkeys(("IL", "IN", "MI", "OH", "WI", "IA", "KS", "MN", "MO", "NE", "ND", "SD"), "Midwest"),
    **dict.fromkeys(("DE", "FL", "GA", "MD", "NC", "SC", "VA", "DC", "WV", "AL", "KY", "MS", "TN", "AR", "LA",
                     "OK", "TX"), "South"),
    **dict.fromkeys(("AZ", "CO", "ID", "MT", "NV", "NM", "UT", "WY", "AK", "CA", "HI", "OR", "WA"), "West"),
}
# fmt: on


@dataclass(frozen=True, slots=True)
class City:
    code: str  # 3 letters, part of facility ids
    name: str
    state: str
    zip: str  # a real ZIP code of the city (downtown)
    lat: float
    lng: float
    stations: int  # delivery stations in the metro
    sector: tuple[float, float] = (0.0, 180.0)  # land-side bearing (centre, half-width) for offsets


# fmt: off
CITIES: tuple[City, ...] = (
    # -- large metros: four delivery stations
    City("NYC", "New York", "NY", "10001", 40.7128, -74.0060, 4, (90, 45)),
    City("LAX", "Los Angeles", "CA", "90012", 34.0522, -118.2437, 4, (90, 120)),
    City("CHI", "Chicago", "IL", "60601", 41.8781, -87.6298, 4, (270, 70)),
    City("HOU", "Houston", "TX", "77002", 29.7604, -95.3698, 4),
    City("PHX", "Phoenix", "AZ", "85003", 33.4484, -112.0740, 4),
    City("PHL", "Philadelphia", "PA", "19103", 39.9526, -75.1652, 4, (300, 70)),
    City("DAL", "Dallas", "TX", "75201", 32.7767, -96.7970, 4),
    City("ATL", "Atlanta", "GA", "30303", 33.7490, -84.3880, 4),
    City("MIA", "Miami", "FL", "33130", 25.7617, -80.1918, 4, (280, 40)),
    City("WAS", "Washington", "DC", "20001", 38.9072, -77.0369, 4, (20, 80)),
    City("BOS", "Boston", "MA", "02108", 42.3601, -71.0589, 4, (250, 50)),
    City("SEA", "Seattle", "WA", "98101", 47.6062, -122.3321, 4, (180, 30)),
    City("SFO", "San Francisco", "CA", "94103", 37.7749, -122.4194, 3, (190, 15)),
    # -- metros: two or three delivery stations
    City("SAT", "San Antonio", "TX", "78205", 29.4241, -98.4936, 3),
    City("SDG", "San Diego", "CA", "92101", 32.7157, -117.1611, 3, (75, 45)),
    City("SJC", "San Jose", "CA", "95113", 37.3382, -121.8863, 3, (150, 70)),
    City("AUS", "Austin", "TX", "78701", 30.2672, -97.7431, 3),
    City("JAX", "Jacksonville", "FL", "32202", 30.3322, -81.6557, 3, (270, 80)),
    City("FTW", "Fort Worth", "TX", "76102", 32.7555, -97.3308, 2),
    City("CMH", "Columbus", "OH", "43215", 39.9612, -82.9988, 3),
    City("CLT", "Charlotte", "NC", "28202", 35.2271, -80.8431, 3),
    City("IND", "Indianapolis", "IN", "46204", 39.7684, -86.1581, 3),
    City("DEN", "Denver", "CO", "80202", 39.7392, -104.9903, 3),
    City("NSH", "Nashville", "TN", "37203", 36.1627, -86.7816, 3),
    City("DTW", "Detroit", "MI", "48226", 42.3314, -83.0458, 3, (295, 45)),
    City("PDX", "Portland", "OR", "97204", 45.5152, -122.6784, 3),
    City("LAS", "Las Vegas", "NV", "89101", 36.1699, -115.1398, 3),
    City("MEM", "Memphis", "TN", "38103", 35.1495, -90.0490, 2, (110, 60)),
    City("SDF", "Louisville", "KY", "40202", 38.2527, -85.7585, 2, (170, 60)),
    City("BAL", "Baltimore", "MD", "21202", 39.2904, -76.6122, 2, (310, 50)),
    City("MKE", "Milwaukee", "WI", "53202", 43.0389, -87.9065, 2, (265, 55)),
    City("MSP", "Minneapolis", "MN", "55401", 44.9778, -93.2650, 2),
    City("TPA", "Tampa", "FL", "33602", 27.9506, -82.4572, 2, (40, 40)),
    City("ORL", "Orlando", "FL", "32801", 28.5383, -81.3792, 2),
    City("STL", "St. Louis", "MO", "63101", 38.6270, -90.1994, 2, (270, 65)),
    City("PIT", "Pittsburgh", "PA", "15222", 40.4406, -79.9959, 2),
    City("CIN", "Cincinnati", "OH", "45202", 39.1031, -84.5120, 2, (0, 60)),
    City("KCM", "Kansas City", "MO", "64106", 39.0997, -94.5786, 2, (150, 70)),
    City("CLE", "Cleveland", "OH", "44114", 41.4993, -81.6944, 2, (180, 55)),
    City("SAC", "Sacramento", "CA", "95814", 38.5816, -121.4944, 2),
    City("SLC", "Salt Lake City", "UT", "84101", 40.7608, -111.8910, 2, (160, 50)),
    City("RAL", "Raleigh", "NC", "27601", 35.7796, -78.6382, 2),
    City("OKC", "Oklahoma City", "OK", "73102", 35.4676, -97.5164, 2),
    # -- cities: one or two delivery stations
    City("ABQ", "Albuquerque", "NM", "87102", 35.0844, -106.6504, 2),
    City("TUS", "Tucson", "AZ", "85701", 32.2226, -110.9747, 2),
    City("FAT", "Fresno", "CA", "93721", 36.7378, -119.7871, 2),
    City("OMA", "Omaha", "NE", "68102", 41.2565, -95.9345, 2, (270, 70)),
    City("RIC", "Richmond", "VA", "23219", 37.5407, -77.4360, 2),
    City("ORF", "Norfolk", "VA", "23510", 36.8508, -76.2859, 1, (180, 30)),
    City("MSY", "New Orleans", "LA", "70112", 29.9511, -90.0715, 2, (275, 20)),
    City("BHM", "Birmingham", "AL", "35203", 33.5186, -86.8104, 2),
    City("BUF", "Buffalo", "NY", "14202", 42.8864, -78.8784, 2, (80, 40)),
    City("HFD", "Hartford", "CT", "06103", 41.7658, -72.6734, 2),
    City("PVD", "Providence", "RI", "02903", 41.8240, -71.4128, 1, (320, 40)),
    City("TUL", "Tulsa", "OK", "74103", 36.1540, -95.9928, 2),
    City("ONT", "Ontario", "CA", "91764", 34.0633, -117.6509, 1),
    City("RIV", "Riverside", "CA", "92501", 33.9806, -117.3755, 1),
    City("BOI", "Boise", "ID", "83702", 43.6150, -116.2023, 1),
    City("GEG", "Spokane", "WA", "99201", 47.6588, -117.4260, 1),
    City("GRR", "Grand Rapids", "MI", "49503", 42.9634, -85.6681, 1),
    City("DSM", "Des Moines", "IA", "50309", 41.5868, -93.6250, 1),
    City("LIT", "Little Rock", "AR", "72201", 34.7465, -92.2896, 1, (200, 70)),
    City("GSO", "Greensboro", "NC", "27401", 36.0726, -79.7920, 1),
    City("CHS", "Charleston", "SC", "29401", 32.7765, -79.9311, 1, (325, 15)),
    City("CAE", "Columbia", "SC", "29201", 34.0007, -81.0348, 1, (60, 80)),
    City("TYS", "Knoxville", "TN", "37902", 35.9606, -83.9207, 1, (0, 70)),
    City("ELP", "El Paso", "TX", "79901", 31.7619, -106.4850, 2, (20, 50)),
    City("MFE", "McAllen", "TX", "78501", 26.2034, -98.2300, 1, (0, 50)),
    City("BTR", "Baton Rouge", "LA", "70801", 30.4515, -91.1871, 1, (90, 60)),
    City("JAN", "Jackson", "MS", "39201", 32.2988, -90.1848, 1),
    City("ICT", "Wichita", "KS", "67202", 37.6872, -97.3301, 1),
    City("ANC", "Anchorage", "AK", "99501", 61.2181, -149.9003, 1, (120, 30)),
    City("HNL", "Honolulu", "HI", "96813", 21.3069, -157.8583, 1, (300, 15)),
    # -- towns and small cities: one delivery station
    City("MSN", "Madison", "WI", "53703", 43.0731, -89.4012, 1),
    City("LEX", "Lexington", "KY", "40507", 38.0406, -84.5037, 1),
    City("CHA", "Chattanooga", "TN", "37402", 35.0456, -85.3097, 1),
    City("SAV", "Savannah", "GA", "31401", 32.0809, -81.0912, 1),
    City("MOB", "Mobile", "AL", "36602", 30.6954, -88.0399, 1),
    City("HSV", "Huntsville", "AL", "35801", 34.7304, -86.5861, 1),
    City("TOL", "Toledo", "OH", "43604", 41.6528, -83.5379, 1),
    City("DAY", "Dayton", "OH", "45402", 39.7589, -84.1916, 1),
    City("AKR", "Akron", "OH", "44308", 41.0814, -81.5190, 1),
    City("FWA", "Fort Wayne", "IN", "46802", 41.0793, -85.1394, 1),
    City("SBN", "South Bend", "IN", "46601", 41.6764, -86.2520, 1),
    City("LAN", "Lansing", "MI", "48933", 42.7325, -84.5555, 1),
    City("ROC", "Rochester", "NY", "14604", 43.1566, -77.6088, 1),
    City("SYR", "Syracuse", "NY", "13202", 43.0481, -76.1474, 1),
    City("ALB", "Albany", "NY", "12207", 42.6526, -73.7562, 1),
    City("ABE", "Allentown", "PA", "18101", 40.6084, -75.4902, 1),
    City("MDT", "Harrisburg", "PA", "17101", 40.2732, -76.8867, 1),
    City("AVP", "Scranton", "PA", "18503", 41.4090, -75.6624, 1),
    City("ORH", "Worcester", "MA", "01608", 42.2626, -71.8023, 1),
    City("SPR", "Springfield", "MA", "01103", 42.1015, -72.5898, 1),
    City("MHT", "Manchester", "NH", "03101", 42.9956, -71.4548, 1),
    City("PWM", "Portland", "ME", "04101", 43.6591, -70.2568, 1),
    City("BTV", "Burlington", "VT", "05401", 44.4759, -73.2121, 1),
    City("HVN", "New Haven", "CT", "06510", 41.3083, -72.9279, 1),
    City("EWR", "Newark", "NJ", "07102", 40.7357, -74.1724, 1),
    City("TTN", "Trenton", "NJ", "08608", 40.2206, -74.7597, 1),
    City("ILG", "Wilmington", "DE", "19801", 39.7391, -75.5398, 1),
    City("ROA", "Roanoke", "VA", "24011", 37.2710, -79.9414, 1),
    City("CRW", "Charleston", "WV", "25301", 38.3498, -81.6326, 1),
    City("AVL", "Asheville", "NC", "28801", 35.5951, -82.5515, 1),
    City("ILM", "Wilmington", "NC", "28401", 34.2257, -77.9447, 1),
    City("GSP", "Greenville", "SC", "29601", 34.8526, -82.3940, 1),
    City("AGS", "Augusta", "GA", "30901", 33.4735, -81.9748, 1),
    City("MCN", "Macon", "GA", "31201", 32.8407, -83.6324, 1),
    City("TLH", "Tallahassee", "FL", "32301", 30.4383, -84.2807, 1),
    City("PNS", "Pensacola", "FL", "32502", 30.4213, -87.2169, 1),
    City("RSW", "Fort Myers", "FL", "33901", 26.6406, -81.8723, 1),
    City("PBI", "West Palm Beach", "FL", "33401", 26.7153, -80.0534, 1),
    City("FLL", "Fort Lauderdale", "FL", "33301", 26.1224, -80.1373, 1, (270, 45)),
    City("GNV", "Gainesville", "FL", "32601", 29.6516, -82.3248, 1),
    City("SHV", "Shreveport", "LA", "71101", 32.5252, -93.7502, 1),
    City("LFT", "Lafayette", "LA", "70501", 30.2241, -92.0198, 1),
    City("GPT", "Gulfport", "MS", "39501", 30.3674, -89.0928, 1),
    City("LBB", "Lubbock", "TX", "79401", 33.5779, -101.8552, 1),
    City("AMA", "Amarillo", "TX", "79101", 35.2220, -101.8313, 1),
    City("MAF", "Midland", "TX", "79701", 31.9973, -102.0779, 1),
    City("CRP", "Corpus Christi", "TX", "78401", 27.8006, -97.3964, 1),
    City("ACT", "Waco", "TX", "76701", 31.5493, -97.1467, 1),
    City("LRD", "Laredo", "TX", "78040", 27.5306, -99.4803, 1),
    City("BRO", "Brownsville", "TX", "78520", 25.9017, -97.4975, 1),
    City("SGF", "Springfield", "MO", "65806", 37.2090, -93.2923, 1),
    City("COU", "Columbia", "MO", "65201", 38.9517, -92.3341, 1),
    City("TOP", "Topeka", "KS", "66603", 39.0473, -95.6752, 1),
    City("LNK", "Lincoln", "NE", "68508", 40.8136, -96.7026, 1),
    City("FSD", "Sioux Falls", "SD", "57104", 43.5446, -96.7311, 1),
    City("FAR", "Fargo", "ND", "58102", 46.8772, -96.7898, 1),
    City("BIS", "Bismarck", "ND", "58501", 46.8083, -100.7837, 1),
    City("RAP", "Rapid City", "SD", "57701", 44.0805, -103.2310, 1),
    City("CID", "Cedar Rapids", "IA", "52401", 41.9779, -91.6656, 1),
    City("DVN", "Davenport", "IA", "52801", 41.5236, -90.5776, 1),
    City("PIA", "Peoria", "IL", "61602", 40.6936, -89.5890, 1),
    City("SPI", "Springfield", "IL", "62701", 39.7817, -89.6501, 1),
    City("RFD", "Rockford", "IL", "61101", 42.2711, -89.0940, 1),
    City("GRB", "Green Bay", "WI", "54301", 44.5133, -88.0133, 1),
    City("DLH", "Duluth", "MN", "55802", 46.7867, -92.1005, 1),
    City("RST", "Rochester", "MN", "55902", 44.0121, -92.4802, 1),
    City("BIL", "Billings", "MT", "59101", 45.7833, -108.5007, 1),
    City("MSO", "Missoula", "MT", "59802", 46.8721, -113.9940, 1),
    City("CPR", "Casper", "WY", "82601", 42.8666, -106.3131, 1),
    City("CYS", "Cheyenne", "WY", "82001", 41.1400, -104.8202, 1),
    City("COS", "Colorado Springs", "CO", "80903", 38.8339, -104.8214, 1),
    City("GJT", "Grand Junction", "CO", "81501", 39.0639, -108.5506, 1),
    City("RNO", "Reno", "NV", "89501", 39.5296, -119.8138, 1),
    City("FLG", "Flagstaff", "AZ", "86001", 35.1983, -111.6513, 1),
    City("SAF", "Santa Fe", "NM", "87501", 35.6870, -105.9378, 1),
    City("LRU", "Las Cruces", "NM", "88001", 32.3199, -106.7637, 1),
    City("PVU", "Provo", "UT", "84601", 40.2338, -111.6585, 1),
    City("OGD", "Ogden", "UT", "84401", 41.2230, -111.9738, 1),
    City("IDA", "Idaho Falls", "ID", "83402", 43.4917, -112.0339, 1),
    City("EUG", "Eugene", "OR", "97401", 44.0521, -123.0868, 1),
    City("MFR", "Medford", "OR", "97501", 42.3265, -122.8756, 1),
    City("SLE", "Salem", "OR", "97301", 44.9429, -123.0351, 1),
    City("TAC", "Tacoma", "WA", "98402", 47.2529, -122.4443, 1, (140, 30)),
    City("YKM", "Yakima", "WA", "98901", 46.6021, -120.5059, 1),
    City("BFL", "Bakersfield", "CA", "93301", 35.3733, -119.0187, 1),
    City("SBD", "San Bernardino", "CA", "92401", 34.1083, -117.2898, 1),
    City("SCK", "Stockton", "CA", "95202", 37.9577, -121.2908, 1),
    City("MOD", "Modesto", "CA", "95354", 37.6391, -120.9969, 1),
    City("OAK", "Oakland", "CA", "94612", 37.8044, -122.2712, 1, (110, 35)),
    City("SNA", "Santa Ana", "CA", "92701", 33.7455, -117.8677, 1),
    City("LGB", "Long Beach", "CA", "90802", 33.7701, -118.1937, 1, (0, 50)),
    City("RDD", "Redding", "CA", "96001", 40.5865, -122.3917, 1),
    City("FAI", "Fairbanks", "AK", "99701", 64.8378, -147.7164, 1),
    City("JNU", "Juneau", "AK", "99801", 58.3019, -134.4197, 1),
    City("ITO", "Hilo", "HI", "96720", 19.7071, -155.0885, 1),
    City("OGG", "Kahului", "HI", "96732", 20.8893, -156.4729, 1),
)

# Real air/ground hubs, at their airports: code, name, city, state, zip, lat, lng.
HUBS: tuple[tuple[str, str, str, str, str, float, float], ...] = (
    ("MEM", "Memphis World Air Hub", "Memphis", "TN", "38118", 35.0424, -89.9767),
    ("SDF", "Louisville Air Hub", "Louisville", "KY", "40209", 38.1744, -85.7360),
    ("IND", "Indianapolis Air Hub", "Indianapolis", "IN", "46241", 39.7173, -86.2944),
    ("ORD", "Chicago O'Hare Hub", "Chicago", "IL", "60666", 41.9742, -87.9073),
    ("DFW", "Dallas-Fort Worth Hub", "Dallas", "TX", "75261", 32.8998, -97.0403),
    ("ATL", "Atlanta Hub", "Atlanta", "GA", "30320", 33.6407, -84.4277),
    ("ONT", "Ontario Gateway Hub", "Ontario", "CA", "91761", 34.0560, -117.6012),
    ("EWR", "Newark Gateway Hub", "Newark", "NJ", "07114", 40.6895, -74.1745),
    ("OAK", "Oakland Air Hub", "Oakland", "CA", "94621", 37.7126, -122.2197),
    ("RFD", "Rockford Air Hub", "Rockford", "IL", "61109", 42.1954, -89.0972),
    ("CVG", "Cincinnati/Northern Kentucky Air Hub", "Hebron", "KY", "41048", 39.0488, -84.6678),
    ("PHL", "Philadelphia Air Hub", "Philadelphia", "PA", "19153", 39.8744, -75.2424),
    ("MIA", "Miami Gateway Hub", "Miami", "FL", "33126", 25.7959, -80.2870),
    ("DEN", "Denver Hub", "Denver", "CO", "80249", 39.8561, -104.6737),
    ("SLC", "Salt Lake City Hub", "Salt Lake City", "UT", "84122", 40.7899, -111.9791),
    ("PHX", "Phoenix Hub", "Phoenix", "AZ", "85034", 33.4342, -112.0116),
    ("MCI", "Kansas City Hub", "Kansas City", "MO", "64153", 39.2976, -94.7139),
    ("SEA", "Seattle-Tacoma Hub", "SeaTac", "WA", "98158", 47.4502, -122.3088),
    ("ANC", "Anchorage Air Hub", "Anchorage", "AK", "99502", 61.1743, -149.9962),
    ("GSO", "Piedmont Triad Air Hub", "Greensboro", "NC", "27409", 36.0978, -79.9373),
    ("HNL", "Honolulu Air Hub", "Honolulu", "HI", "96819", 21.3187, -157.9225),
)

# One sort center each.
SORT_CENTERS: tuple[str, ...] = (
    "NYC", "LAX", "CHI", "HOU", "PHX", "PHL", "DAL", "ATL", "MIA", "WAS", "BOS", "SEA", "SFO",
    "SAT", "SDG", "JAX", "CMH", "CLT", "IND", "DEN", "NSH", "DTW", "PDX", "LAS", "MEM", "MSP",
    "TPA", "STL", "PIT", "KCM", "SLC", "SAC", "OKC", "ABQ", "OMA", "BHM", "BUF", "RIC", "GEG",
    "ELP", "BIL", "FAR", "ANC", "HNL",
)

# Origin (pickup / induction) facilities: two in each large metro, one elsewhere.
ORIGINS: tuple[tuple[str, int], ...] = (
    ("NYC", 2), ("LAX", 2), ("CHI", 2), ("HOU", 2), ("PHX", 2), ("PHL", 2), ("DAL", 2), ("ATL", 2),
    ("MIA", 2), ("WAS", 2), ("BOS", 2), ("SEA", 2), ("SFO", 2),
    ("SAT", 1), ("SDG", 1), ("SJC", 1), ("AUS", 1), ("JAX", 1), ("FTW", 1), ("CMH", 1), ("CLT", 1),
    ("IND", 1), ("DEN", 1), ("NSH", 1), ("DTW", 1), ("PDX", 1), ("LAS", 1), ("MEM", 1), ("SDF", 1),
    ("BAL", 1), ("MKE", 1), ("MSP", 1), ("TPA", 1), ("ORL", 1), ("STL", 1), ("PIT", 1), ("CIN", 1),
    ("KCM", 1), ("CLE", 1), ("SAC", 1), ("SLC", 1), ("RAL", 1), ("OKC", 1),
    ("GRR", 1), ("ONT", 1), ("RIV", 1), ("GSO", 1),
)
# fmt: on

_STREETS = {
    "hub": ("Air Cargo Rd", "Airport Rd", "Cargo Way", "Freight Dr", "Aviation Blvd", "Airfreight Pkwy"),
    "sort_center": ("Commerce Pkwy", "Distribution Dr", "Industrial Blvd", "Logistics Way", "Gateway Dr"),
    "origin": ("Enterprise Ave", "Trade Center Dr", "Merchant Way", "Shipping Ln", "Dock St"),
    "delivery_station": (
        "Warehouse Rd",
        "Park Central Dr",
        "Service Rd",
        "Corporate Dr",
        "Business Park Dr",
        "Depot St",
        "Fleet Ave",
        "Route Ln",
    ),
}
_NAME_SUFFIX = {
    "sort_center": "Sort Center",
    "origin": "Pickup Center",
    "delivery_station": "Delivery Station",
}


def _stable(s: str) -> int:
    return zlib.crc32(s.encode())


def _address(facility_id: str, kind: str) -> str:
    streets = _STREETS[kind]
    number = 100 + _stable(facility_id) % 9800
    return f"{number} {streets[_stable(facility_id + '/street') % len(streets)]}"


def _offset(city: City, k: int) -> tuple[float, float]:
    """The k-th facility of a metro: k=0 at the city's coordinates, then outward on a spiral."""
    if k == 0:
        return city.lat, city.lng
    radius_km = 2.0 + 1.7 * (k - 1)
    centre, half = city.sector
    spread = ((k * 0.6180339887) % 1.0) * 2.0 - 1.0  # golden-ratio spread in [-1, 1)
    bearing = math.radians(centre + half * spread)
    dlat = radius_km * math.cos(bearing) / 111.32
    dlng = radius_km * math.sin(bearing) / (111.32 * math.cos(math.radians(city.lat)))
    return city.lat + dlat, city.lng + dlng


def build_rows() -> list[dict[str, str]]:
    cities = {c.code: c for c in CITIES}
    if len(cities) != len(CITIES):
        raise ValueError("duplicate city code")
    rows: list[dict[str, str]] = []

    def row(fid: str, name: str, kind: str, city: str, state: str, zip_: str, lat: float, lng: float) -> None:
        rows.append(
            {
                "facility_id": fid,
                "name": name,
                "address": _address(fid, kind),
                "city": city,
                "state": state,
                "zip": zip_,
                "lat": f"{lat:.6f}",
                "lng": f"{lng:.6f}",
                "type": kind,
                "region": CENSUS_REGION[state],
            }
        )

    for code, name, city_name, state, zip_, lat, lng in HUBS:
        row(f"US-HUB-{code}", name, "hub", city_name, state, zip_, lat, lng)

    origins = dict(ORIGINS)
    for city in CITIES:
        k = 0  # position on the metro's spiral: stations first, then the sort center, then origins
        members: list[tuple[str, str, str]] = []
        for i in range(1, city.stations + 1):
            members.append((f"US-DS-{city.code}-{i:02d}", f"{city.name} Delivery Station {i:02d}", "delivery_station"))
        if city.code in SORT_CENTERS:
            members.append((f"US-SC-{city.code}", f"{city.name} Sort Center", "sort_center"))
        for i in range(1, origins.get(city.code, 0) + 1):
            members.append((f"US-OR-{city.code}-{i:02d}", f"{city.name} Pickup Center {i:02d}", "origin"))
        for fid, name, kind in members:
            lat, lng = _offset(city, k)
            row(fid, name, kind, city.name, city.state, city.zip, lat, lng)
            k += 1

    unknown = (set(SORT_CENTERS) | set(origins)) - set(cities)
    if unknown:
        raise ValueError(f"sort centers/origins name unknown cities: {sorted(unknown)}")
    ids = [r["facility_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate facility id")
    order = {"hub": 0, "sort_center": 1, "origin": 2, "delivery_station": 3}
    rows.sort(key=lambda r: (order[r["type"]], r["facility_id"]))
    return rows


def render_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    rows = build_rows()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_csv(rows))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["type"]] = counts.get(r["type"], 0) + 1
    print(f"wrote {len(rows)} facilities to {args.out}: {counts}")


if __name__ == "__main__":
    main()
